"""``sparsify_graph``: pruned linear and conv layers of a torch.fx graph become generated kernels.

The pass copies the GraphModule (its input is never mutated), finds every
linear-like node (see match.RULES), analyses each constant weight, lets the
planner choose a kernel or keep the layer dense, and replaces chosen nodes by
a call to ``torch.ops.sparsepass.bsr_linear`` whose BSR arrays are buffers of
the returned module. Dense weights that no longer have a user are dropped.
The returned module carries ``sparsepass_report`` (see report.Report), and
each rewritten node carries its LayerReport in ``node.meta["sparsepass"]``.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import operator
from typing import Any, Sequence

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch.fx.passes.shape_prop import ShapeProp

from sparsepass.codegen.bsr_format import pack_for
from sparsepass.codegen.target import canonical_target
from sparsepass.errors import SparsifyError
from sparsepass.ops import torch_ops  # noqa: F401  (registers torch.ops.sparsepass)
from sparsepass.passes.analysis import Structure, as_array, detect
from sparsepass.passes.fx.compact_channels import compact_channels
from sparsepass.passes.fx.conv_match import fusable_tail, match_conv
from sparsepass.passes.fx.fold_bn import fold_batchnorm, has_batchnorm
from sparsepass.passes.fx.gelu_tanh import recognise_tanh_gelu
from sparsepass.passes.fx.match import LinearSite, match_linear, node_shape
from sparsepass.passes.fx.max_pool import match_max_pool, rewrite_max_pool
from sparsepass.passes.fx.measure import confirm, random_like, unmeasurable_reason
from sparsepass.passes.fx.preflight import check_eval_mode, is_aten_graph, remove_identity_dropout
from sparsepass.passes.fx.silu_formula import recognise_silu
from sparsepass.passes.fx.sparsify_conv import rewrite_conv
from sparsepass.passes.fx.splice import chain, register_arrays, splice_call
from sparsepass.passes.plan import DEFAULT_COST, DEFAULT_TOKENS, CostModel, Decision, choose
from sparsepass.passes.precision import (
    check_float32_precision,
    float32_in_bfloat16,
    float32_matmul_precision,
)
from sparsepass.passes.report import LayerReport, Report
from sparsepass.prune.torch_pruning import (
    fold_masked_weights,
    has_reparametrized_weights,
    made_permanent,
)

log = logging.getLogger(__name__)



@dataclasses.dataclass(frozen=True)
class SparsifyOptions:
    """Options of `sparsify_graph`.

    tokens : rows of X the planner assumes when no example inputs are given
    cost : the planner's cost model
    fuse_activations : fold a ReLU/ReLU6/GELU/SiLU/tanh that alone consumes a rewritten
        layer into its kernel's epilogue
    compact : first remove dead channels physically (compact_channels; needs example inputs)
    pooling : run 2-D max pooling (and a ReLU before it) on sparsepass's kernel on CPUs,
        where PyTorch's NCHW max_pool2d is slow (passes.fx.max_pool)
    fold_batchnorm : first fold each eval-mode BatchNorm into the float32 conv before it (fold_bn,
        as the Relax pipeline does), so that the conv's kernel also takes the ReLU and residual
        after it (half-precision convs keep theirs: folding would round the folded weights)
    measure : time each layer the planner would rewrite against PyTorch's dense op on this
        machine (at the shapes example_inputs give) and keep it dense unless its kernel wins by
        ``cost.min_speedup`` (passes.fx.measure): for CPUs the cost model was not fitted on
    float32_precision : how float32 linear layers may compute, in PyTorch's words
        (``torch.backends.mkldnn.matmul.fp32_precision``): "bf16" lets them run on AMX tiles
        with bfloat16 products summed in float32, what PyTorch's own linear computes then (and
        what ``torch.set_float32_matmul_precision("medium")`` asks for); "none" or "ieee" keep
        them exact. None: PyTorch's setting when sparsify_graph runs (fixed in the graph then)
    """

    tokens: int = DEFAULT_TOKENS
    cost: CostModel = DEFAULT_COST
    fuse_activations: bool = True
    compact: bool = True
    pooling: bool = True
    fold_batchnorm: bool = True
    measure: bool = False
    float32_precision: str | None = None

    def __post_init__(self):
        check_float32_precision(self.float32_precision)


def _tokens_per_site(gm: fx.GraphModule, example_inputs: Sequence[Any] | None) -> dict[str, int]:
    """Rows of X reaching each node, from a shape propagation over the example inputs."""
    if example_inputs is None:
        return {}
    ShapeProp(gm).propagate(*example_inputs)
    rows = {}
    for node in gm.graph.nodes:
        meta = node.meta.get("tensor_meta")
        if meta is not None and hasattr(meta, "shape") and len(meta.shape) >= 1:
            rows[node.name] = math.prod(meta.shape[:-1])
    return rows


def _kernel_label(spec) -> str:
    label = f"bsr {spec.block[0]}x{spec.block[1]} {spec.layout}" + (" +residual" if spec.residual else "")
    return label if spec.epilogue == "none" else f"{label} +{spec.epilogue}"


class _Rewriter:
    """Rewrites the sites of one GraphModule; holds the per-call packing caches."""

    def __init__(self, gm: fx.GraphModule, target: dict, tokens: dict[str, int], options):
        self.gm, self.target, self.tokens, self.options = gm, target, tokens, options
        self.float32_in_bfloat16 = float32_in_bfloat16(options.float32_precision)
        self.structures: dict[str, Structure] = {}
        self.packed: dict[tuple, dict[str, np.ndarray]] = {}
        self.buffers: dict[tuple, list[str]] = {}

    def structure(self, site: LinearSite) -> Structure:
        key = site.weight_attr
        if key not in self.structures:
            self.structures[key] = detect(site.weight)
        return self.structures[key]

    def decide(self, site: LinearSite, structure: Structure, epilogue: str) -> Decision:
        x_name = site.x.name if isinstance(site.x, fx.Node) else ""
        tokens = self.tokens.get(x_name, self.options.tokens)
        return choose(structure, self.target, tokens=max(tokens, 1), epilogue=epilogue,
                      cost=self.options.cost, float32_in_bfloat16=self.float32_in_bfloat16)

    def tail(self, site: LinearSite) -> tuple[fx.Node, fx.Node | None, str]:
        """(last node fused, residual, epilogue) folded into the kernel; only after a constant bias."""
        produced = site.out or site.node
        if not self.options.fuse_activations or site.bias_node is not None:
            return produced, None, "none"
        return fusable_tail(self.gm, produced, allow_residual=True)

    def bsr(self, site: LinearSite, spec) -> dict[str, np.ndarray]:
        """The layer's weight and bias in the kernel's BSR arrays (packed once per block shape)."""
        key = (site.weight_attr, id(site.bias), spec.block, spec.parts, spec.layout == "amx")
        if key not in self.packed:
            bias = None if site.bias is None else site.bias.float().numpy()
            self.packed[key] = pack_for(spec.layout, as_array(site.weight), spec.block, spec.parts, bias)
        return self.packed[key]

    def pack(self, site: LinearSite, decision: Decision) -> list[str]:
        spec = decision.kernel
        key = (site.weight_attr, id(site.bias), spec)
        if key not in self.buffers:
            self.buffers[key] = register_arrays(self.gm, site.name, self.bsr(site, spec))
        return self.buffers[key]

    def measured(self, site: LinearSite, decision: Decision) -> Decision:
        """The decision confirmed (or overturned) by timing the kernel against F.linear here."""
        shape, spec = node_shape(site.x), decision.kernel
        unmeasurable = unmeasurable_reason(shape, self.target)
        if unmeasurable:
            return dataclasses.replace(decision, reason=f"{decision.reason}; not measured: {unmeasurable}")
        x = random_like(shape, site.weight.dtype)
        residual = random_like((*shape[:-1], spec.out_features), site.weight.dtype) if spec.residual else None
        arrays = [torch.from_numpy(array) for array in self.bsr(site, spec).values()]
        precision = "bf16" if spec.layout == "amx" and spec.dtype == "float32" else None

        def dense():  # PyTorch's linear under the precision the kernel computes in
            with float32_matmul_precision(precision):
                return F.linear(x, site.weight, site.bias)

        return confirm(decision, dense, residual,
                       lambda: torch.ops.sparsepass.bsr_linear(x, *arrays, residual, spec.to_json(), site.name),
                       self.options.cost.min_speedup)

    def rewrite(self, site: LinearSite) -> LayerReport:
        if site.why_dense:
            return LayerReport(site.name, site.rule, (), "-", None, "dense", site.why_dense)
        structure = self.structure(site)
        last, residual, epilogue = self.tail(site)
        decision = self.decide(site, structure, epilogue)
        if decision.kernel is not None and residual is not None:
            decision = dataclasses.replace(decision, kernel=dataclasses.replace(decision.kernel, residual=True))
        if decision.kernel is not None and self.options.measure:
            decision = self.measured(site, decision)
        report = LayerReport(
            site.name, site.rule, structure.shape, structure.summary(), structure.density,
            "dense" if decision.kernel is None else _kernel_label(decision.kernel),
            decision.reason,
            decision.estimated_speedup if decision.sparse_cost else None,
        )
        if decision.kernel is not None:
            self.splice(site, decision, report, last, residual)
        return report

    def splice(self, site: LinearSite, decision: Decision, report: LayerReport,
               last: fx.Node, residual: fx.Node | None) -> None:
        node = site.node
        erase = chain(node, last)
        new = splice_call(self.gm, torch.ops.sparsepass.bsr_linear.default, last,
                          (site.x, residual, decision.kernel.to_json(), site.name), self.pack(site, decision),
                          report, erase)
        if site.x_view is not None and not site.x_view.users:  # the flattening the kernel does not need
            self.gm.graph.erase_node(site.x_view)
        if site.bias_node is not None:  # a bias computed in the graph is added after the kernel
            with self.gm.graph.inserting_after(new):
                added = self.gm.graph.call_function(torch.add, (new, site.bias_node))
            new.replace_all_uses_with(added, delete_user_cb=lambda user: user is not added)


#: Pure functions of shapes (x.shape[-1], x.size()[:-1] + (n,)) that a removed view may leave unused.
_SHAPE_FUNCTIONS = (getattr, operator.getitem, operator.add, operator.mul, operator.sub, operator.floordiv,
                    torch.ops.aten.sym_size.int)


def _erase_dead_shape_arithmetic(gm: fx.GraphModule) -> None:
    changed = True
    while changed:
        changed = False
        for node in reversed(gm.graph.nodes):
            shape_math = (node.op == "call_function" and node.target in _SHAPE_FUNCTIONS) or (
                node.op == "call_method" and node.target in ("size", "dim"))
            if shape_math and not node.users:
                gm.graph.erase_node(node)
                changed = True


def _erase_dead_weights(gm: fx.GraphModule) -> None:
    """Erase get_attr/transpose nodes left without users and the attributes behind them."""
    changed = True
    while changed:
        changed = False
        for node in reversed(gm.graph.nodes):
            dead = not node.users and (
                node.op == "get_attr"
                or (node.op in ("call_method", "call_function") and not node.is_impure()
                    and all(a.op == "get_attr" for a in node.all_input_nodes))
            )
            if dead and node.op != "output":
                gm.graph.erase_node(node)
                changed = True
    used = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    called = {n.target for n in gm.graph.nodes if n.op == "call_module"}
    for name, _ in list(gm.named_parameters()) + list(gm.named_buffers()):
        owner = name.rpartition(".")[0]
        inside_called = any(owner == c or owner.startswith(c + ".") for c in called)
        if name not in used and not inside_called and not name.startswith("_sparsepass_"):
            parent = gm.get_submodule(owner) if owner else gm
            delattr(parent, name.rpartition(".")[2])
    gm.delete_all_unused_submodules()


def sparsify_graph(
    gm: fx.GraphModule,
    *,
    target: Any = None,
    example_inputs: Sequence[Any] | None = None,
    options: SparsifyOptions = SparsifyOptions(),
) -> fx.GraphModule:
    """Return a copy of ``gm`` whose pruned linear layers call generated sparse kernels.

    Parameters
    ----------
    gm : a GraphModule from ``torch.fx.symbolic_trace``, ``sparsepass.frontends.trace``
        or ``torch.export(...).module()``, in eval mode
    target : None or "llvm" for the host CPU, or a TVM target dict
    example_inputs : optional inputs; when given, the planner uses the real number
        of rows reaching each layer instead of ``options.tokens``
    options : SparsifyOptions

    Returns
    -------
    A new GraphModule computing the same function, with ``.sparsepass_report``.
    Raises SparsifyError when the model is in training mode.
    """
    if not isinstance(gm, fx.GraphModule):
        raise SparsifyError(None, f"sparsify_graph expects a torch.fx.GraphModule, got {type(gm).__name__}; "
                            "use sparsepass.frontends.trace(model, example_inputs) first")
    compacted, notes = (), ()
    if has_reparametrized_weights(gm):  # pruning APIs' computed weights: a copy with them plain
        gm = made_permanent(gm)
        notes = ("pruning reparametrizations (torch.nn.utils.prune, torch.ao.pruning) made permanent "
                 "in the copy: each weight as its masked value",)
    check_eval_mode(gm)
    if options.fold_batchnorm and has_batchnorm(gm):
        # Half-precision convs keep their BatchNorm: folding would round the folded weights.
        gm = fold_batchnorm(gm, dtypes=(torch.float32,))
        if gm.sparsepass_folded:
            notes = (f"{gm.sparsepass_folded} BatchNorm(s) folded into the conv before them",)
    if options.compact and example_inputs is not None and not is_aten_graph(gm):
        gm = compact_channels(gm, example_inputs, target)
        layers_compacted, kept = gm.sparsepass_compaction
        compacted = tuple((c.name, c.before, c.after) for c in layers_compacted)
        notes = (*notes, *kept)
    elif options.compact and example_inputs is None:
        notes = (*notes, "channel compaction skipped: it needs example_inputs")
    elif options.compact:
        notes = (*notes, "channel compaction skipped: it works on module-level graphs (this one is aten-level)")
    out = copy.deepcopy(gm)
    if fold_masked_weights(out):
        notes = (*notes, "masked weights (a pruning API's or the model's own weight * mask) folded into constants")
    remove_identity_dropout(out)
    gelus = recognise_tanh_gelu(out)
    if gelus:
        notes = tuple(notes) + (f"{gelus} tanh-GELU formula(s) (0.5x(1+tanh(...))) recognised as "
                                "gelu(approximate='tanh')",)
    silus = recognise_silu(out)
    if silus:
        notes = tuple(notes) + (f"{silus} SiLU formula(s) (x * sigmoid(x)) recognised as silu",)
    rewriter = _Rewriter(out, canonical_target(target), _tokens_per_site(out, example_inputs), options)
    # Match each node only when reached: an earlier rewrite may have replaced its inputs.
    layers, other_ops = [], []
    for node in list(out.graph.nodes):
        if node.graph is not out.graph:  # erased by an earlier fusion
            continue
        site = match_linear(out, node)
        if site is not None:
            layers.append(rewriter.rewrite(site))
            continue
        conv = match_conv(out, node)
        if conv is not None:
            layers.append(rewrite_conv(out, conv, rewriter.target, options.fuse_activations, options.cost,
                                       options.measure))
            continue
        pool = match_max_pool(out, node) if options.pooling else None
        if pool is not None:
            other_ops.extend(filter(None, [rewrite_max_pool(out, pool, rewriter.target)]))
    layers = tuple(layers)
    _erase_dead_shape_arithmetic(out)
    _erase_dead_weights(out)
    out.graph.lint()
    out.recompile()
    out.sparsepass_report = Report(layers, compacted, notes, tuple(other_ops))
    log.info("sparsify_graph rewrote %d of %d linear layers", out.sparsepass_report.rewritten, len(layers))
    return out
