"""assert_equivalent: does a compiled model still compute what the dense one did?

One call for a user's CI. It runs a reference and a candidate on each input,
compares every output leaf (tensors inside tuples, lists, dicts, HF
ModelOutput), with a tolerance derived from the dtype and the model's longest
reduction (see tolerance.output_tolerance; half-precision outputs from the
reference's own rounding error, measured against a float64 copy of it:
tolerance.half_output_tolerance), and on failure says which leaf,
which element, both values, the tolerance, and for torch.fx graphs the first
node whose value diverges, found by running both graphs node by node.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any, Iterable

import torch
import torch.fx as fx

from sparsepass.testing.tolerance import HALF_DTYPES, half_output_tolerance, output_tolerance

#: Node meta key set by sparsify_graph: the original node a rewritten node stands for.
REPLACES_KEY = "sparsepass_replaces"


class EquivalenceError(AssertionError):
    """The candidate's outputs differ from the reference's beyond the tolerance."""


@dataclasses.dataclass(frozen=True)
class Divergence:
    """The first fx node (in the candidate's order) whose value differs from the reference's."""

    node: str
    difference: float
    tolerance: float
    layer: str | None = None  # the sparsepass layer, when the node is one sparsepass rewrote

    def __str__(self) -> str:
        what = f"rewritten node {self.node} (layer {self.layer})" if self.layer else f"node {self.node}"
        return (f"first diverging {what}: max |diff| {self.difference:.3g} > "
                f"tolerance {self.tolerance:.3g}")


def flatten_outputs(value: Any, path: str = "output") -> list[tuple[str, Any]]:
    """(path, leaf) pairs of a nested output; tensors and plain values are leaves."""
    if isinstance(value, dict):  # includes transformers' ModelOutput
        return [leaf for key, item in value.items() for leaf in flatten_outputs(item, f"{path}[{key!r}]")]
    if isinstance(value, (tuple, list)):
        return [leaf for i, item in enumerate(value) for leaf in flatten_outputs(item, f"{path}[{i}]")]
    if hasattr(value, "numpy") and not isinstance(value, torch.Tensor):  # a TVM tensor
        return [(path, torch.from_numpy(value.numpy()))]
    if value is not None and hasattr(value, "__len__") and hasattr(value, "__getitem__") \
            and not isinstance(value, (str, bytes, torch.Tensor)):  # a TVM Array
        return flatten_outputs(list(value), path)
    return [(path, value)]


def reduction_length(*models: Any) -> int:
    """The longest dot product any layer of ``models`` computes (1 when none is known)."""
    longest = 1
    for model in models:
        if not isinstance(model, torch.nn.Module):
            continue
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                longest = max(longest, module.in_features)
            elif isinstance(module, torch.nn.modules.conv._ConvNd):
                longest = max(longest, module.in_channels // module.groups * math.prod(module.kernel_size))
            elif isinstance(module, torch.nn.LayerNorm):
                longest = max(longest, math.prod(module.normalized_shape))
        for param in model.parameters():
            if param.dim() >= 2:
                longest = max(longest, math.prod(param.shape[1:]), param.shape[0])
        for buffer_name, buffer in model.named_buffers():
            if buffer_name.endswith("_data") and buffer.dim() == 3:  # sparsepass BSR data [nnzb, C, R]
                longest = max(longest, buffer.shape[0] * buffer.shape[1])
    return longest


def _call(model, args: tuple, entry: str):
    if isinstance(model, torch.nn.Module) or (callable(model) and not _is_tvm(model)):
        with torch.no_grad():
            return model(*args)
    from sparsepass.testing.relax import vm_call

    return vm_call(model, args, entry)


def _is_tvm(model) -> bool:
    return type(model).__module__.startswith(("tvm", "tvm_ffi"))


def _as_args(item) -> tuple:
    return tuple(item) if isinstance(item, (tuple, list)) else (item,)


def _float64_args(args: tuple) -> tuple:
    return tuple(a.double() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)


def _float64_outputs(reference, args: tuple, number: int) -> list[tuple[str, Any]]:
    """The reference's output leaves computed in float64 (a converted copy of it)."""
    why = "it is not a torch module"
    if isinstance(reference, torch.nn.Module):
        try:
            twin = copy.deepcopy(reference).double()
            with torch.no_grad():
                return flatten_outputs(twin(*_float64_args(args)))
        except Exception as err:  # any failure of the copy: say so, with the way out
            why = f"{type(err).__name__}: {err}"
    raise ValueError(f"input {number}: a half-precision output's tolerance is derived from the reference's "
                     f"own rounding error, measured against the reference run in float64, which failed "
                     f"({why}); pass atol (and rtol) explicitly")


def _is_half(value) -> bool:
    return isinstance(value, torch.Tensor) and value.dtype in HALF_DTYPES


def _tolerance(expected: torch.Tensor, exact: torch.Tensor | None, longest: int) -> tuple[float, float]:
    """(atol, rtol) derived for one output."""
    if expected.dtype in HALF_DTYPES:
        return half_output_tolerance(expected, exact, longest)
    return output_tolerance(expected, longest), 0.0


def _compare(path: str, expected, actual, rtol, atol, longest: int, exact=None) -> str | None:
    """None when equal within tolerance, else a message about the worst element. ``exact`` is the
    leaf in float64, needed for a half-precision leaf without ``atol``."""
    if not isinstance(expected, torch.Tensor):
        return None if expected == actual else f"{path}: {actual!r} != {expected!r}"
    if not isinstance(actual, torch.Tensor) or actual.shape != expected.shape:
        shape = getattr(actual, "shape", type(actual).__name__)
        return f"{path}: candidate gives {shape}, reference {tuple(expected.shape)}"
    if not expected.is_floating_point():
        return None if torch.equal(actual, expected) else f"{path}: integer outputs differ"
    derived_atol, derived_rtol = _tolerance(expected, exact, longest) if atol is None else (atol, 0.0)
    tol = atol if atol is not None else derived_atol
    rel = rtol if rtol is not None else derived_rtol
    exp, act = expected.detach().double(), actual.detach().double()
    same_nan = torch.isnan(exp) == torch.isnan(act)
    diff = (act - exp).abs().nan_to_num(nan=0.0, posinf=math.inf)
    excess = diff - (tol + rel * exp.abs().nan_to_num(nan=0.0))
    excess = torch.where(torch.isinf(exp) & (exp == act), torch.zeros_like(excess), excess)
    if bool(same_nan.all()) and not bool((excess > 0).any()):
        return None
    index = tuple(int(i) for i in torch.unravel_index((~same_nan).double().argmax(), exp.shape)) \
        if not bool(same_nan.all()) else tuple(int(i) for i in torch.unravel_index(excess.argmax(), exp.shape))
    return (f"{path}: element {index}: candidate {act[index].item():.9g} vs reference "
            f"{exp[index].item():.9g} (|diff| {abs(act[index].item() - exp[index].item()):.3g}, "
            f"tolerance atol={tol:.3g} rtol={rel:.3g}, from the longest reduction K={longest}"
            + (", twice the reference's own error vs float64, one unit in the last place)"
               if _is_half(expected) and atol is None else ")"))


class _Recorder(fx.Interpreter):
    """Runs a GraphModule and keeps every node's value."""

    def __init__(self, gm):
        super().__init__(gm)
        self.values: dict[str, Any] = {}

    def run_node(self, node):
        value = super().run_node(node)
        self.values[node.name] = value
        return value


def _as_graph(model) -> fx.GraphModule | None:
    if isinstance(model, fx.GraphModule):
        return model
    if isinstance(model, torch.nn.Module):
        try:
            return fx.symbolic_trace(model)
        except Exception:
            return None
    return None


def _float64_values(gm: fx.GraphModule, args: tuple) -> dict[str, Any]:
    """Every node's value with the graph run in float64 (empty when a copy cannot run so)."""
    run = _Recorder(copy.deepcopy(gm).double())
    try:
        with torch.no_grad():
            run.run(*_float64_args(args))
    except Exception:  # a graph that cannot run in float64: half nodes are then not compared
        return {}
    return run.values


def first_divergence(reference, candidate, args: tuple, longest: int) -> Divergence | None:
    """The candidate's first node whose value differs from the same node of the reference."""
    ref_gm, cand_gm = _as_graph(reference), _as_graph(candidate)
    if ref_gm is None or cand_gm is None:
        return None
    ref_run, cand_run = _Recorder(ref_gm), _Recorder(cand_gm)
    with torch.no_grad():
        ref_run.run(*args)
        cand_run.run(*args)
    exact_values = None  # the reference's node values in float64, for half-precision nodes
    for node in cand_gm.graph.nodes:
        if node.op in ("placeholder", "output", "get_attr"):
            continue
        name = node.meta.get(REPLACES_KEY, node.name)
        expected, actual = ref_run.values.get(name), cand_run.values.get(node.name)
        if not isinstance(expected, torch.Tensor) or not isinstance(actual, torch.Tensor) \
                or expected.shape != actual.shape or not expected.is_floating_point():
            continue
        exact = None
        if expected.dtype in HALF_DTYPES:
            exact_values = _float64_values(ref_gm, args) if exact_values is None else exact_values
            exact = exact_values.get(name)
            if not isinstance(exact, torch.Tensor) or exact.shape != expected.shape:
                continue
        tol, rel = _tolerance(expected, exact, longest)
        beyond = ((actual.double() - expected.double()).abs().nan_to_num(nan=math.inf)
                  - rel * expected.double().abs())
        difference = float(beyond.max()) if expected.numel() else 0.0
        if difference > tol:
            report = node.meta.get("sparsepass")
            return Divergence(node.name, difference, tol, getattr(report, "name", None))
    return None


def assert_equivalent(reference, candidate, inputs: Iterable[Any], *, rtol: float | None = None,
                      atol: float | None = None, entry: str = "main") -> None:
    """Assert ``candidate`` computes what ``reference`` does on every input.

    Parameters
    ----------
    reference, candidate : torch modules or GraphModules, or a built Relax
        executable / VirtualMachine / loaded library (called at ``entry``)
    inputs : the calls to check; each is a tuple of positional arguments or a single tensor
    rtol, atol : override the derived tolerance (atol defaults to the two-implementation
        bound of the longest reduction, relative to each output's magnitude)

    Raises ValueError when the reference rejects an input, EquivalenceError when
    the outputs differ (naming the leaf, the element, both values, the
    tolerance, and the first diverging fx node when both models are fx-traceable).
    """
    longest = reduction_length(reference, candidate)
    for number, item in enumerate(inputs):
        args = _as_args(item)
        try:
            expected = _call(reference, args, entry)
        except Exception as err:
            shapes = [tuple(a.shape) if hasattr(a, "shape") else type(a).__name__ for a in args]
            raise ValueError(f"input {number} (shapes {shapes}) is rejected by the reference model: "
                             f"{type(err).__name__}: {err}") from err
        try:
            actual = _call(candidate, args, entry)
        except Exception as err:
            raise EquivalenceError(f"input {number}: the candidate raised {type(err).__name__}: {err}") from err
        expected_leaves, actual_leaves = flatten_outputs(expected), flatten_outputs(actual)
        if len(expected_leaves) != len(actual_leaves):
            raise EquivalenceError(f"input {number}: candidate returns {len(actual_leaves)} outputs, "
                                   f"reference {len(expected_leaves)}")
        exact_leaves = [None] * len(expected_leaves)
        if atol is None and any(_is_half(leaf) for _, leaf in expected_leaves):
            exact_leaves = [leaf for _, leaf in _float64_outputs(reference, args, number)]
        for (path, exp), (_, act), exact in zip(expected_leaves, actual_leaves, exact_leaves):
            problem = _compare(path, exp, act, rtol, atol, longest, exact)
            if problem is not None:
                divergence = first_divergence(reference, candidate, args, longest)
                where = f"\n  {divergence}" if divergence else ""
                raise EquivalenceError(f"input {number}: {problem}{where}")
