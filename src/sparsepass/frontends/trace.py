"""Capturing a model as a torch.fx GraphModule, with errors that say what to fix.

`trace` tries ``torch.fx.symbolic_trace`` (module-level graph: nn.Linear stays
a module call). When that fails, or keeps an ``nn.MultiheadAttention`` whole (a
leaf module whose projections it hides), it records which submodule was being
traced and falls back to ``torch.export`` (aten-level graph, weights as get_attr),
which handles the data-dependent Python that defeats symbolic tracing (HF
transformers since 4.38). When both fail, the SparsifyError names the module
that broke tracing and suggests the fix.

torch.export specialises the graph to the example's shapes unless told which
dims may vary (``dynamic_shapes``; ``"auto"`` lets it keep every dim dynamic
that the model allows). A call at a shape the graph was not captured for fails
its guard with a SparsifyError that says so and how to capture it dynamically.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import torch
import torch.fx as fx
from torch.utils._pytree import tree_leaves

from sparsepass.errors import SparsifyError
from sparsepass.frontends.dynamic import export_dynamic_shapes
from sparsepass.prune.torch_pruning import made_permanent

log = logging.getLogger(__name__)


class _LocatingTracer(fx.Tracer):
    """A symbolic tracer that remembers the module path it was inside when it failed."""

    def __init__(self, leaf_modules: Sequence[type | str] = ()):
        super().__init__()
        self.leaf_modules = tuple(leaf_modules)
        self.stack: list[str] = []
        self.failed_in: str | None = None

    def is_leaf_module(self, m: torch.nn.Module, qualname: str) -> bool:
        for leaf in self.leaf_modules:
            if (isinstance(leaf, str) and leaf == qualname) or (isinstance(leaf, type) and isinstance(m, leaf)):
                return True
        return super().is_leaf_module(m, qualname)

    def call_module(self, m, forward, args, kwargs):
        self.stack.append(f"{self.path_of_module(m) or '<root>'} ({type(m).__name__})")
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:
                self.failed_in = self.stack[-1]
            raise
        finally:
            self.stack.pop()


def _symbolic(model: torch.nn.Module, concrete_args, leaf_modules) -> fx.GraphModule:
    tracer = _LocatingTracer(leaf_modules)
    try:
        graph = tracer.trace(model, concrete_args=concrete_args)
    except Exception as err:
        err.sparsepass_module = tracer.failed_in or f"<root> ({type(model).__name__})"
        raise
    name = model.__class__.__name__
    return fx.GraphModule(tracer.root, graph, name)


class _ExplainedGuards(torch.nn.Module):
    """torch.export's input-shape guards, failing with what a user can do about it."""

    def __init__(self, guards: torch.nn.Module, model_name: str, shapes: list, dynamic: bool):
        super().__init__()
        self.guards, self.model_name, self.shapes, self.dynamic = guards, model_name, shapes, dynamic

    def forward(self, *args, **kwargs):
        try:
            return self.guards(*args, **kwargs)
        except AssertionError as err:
            if self.dynamic:
                fix = ("the call is outside the shapes torch.export allowed (it keeps a dim of example "
                       "size 0 or 1 static: capture with an example of 2 or more there)")
            else:
                fix = ("torch.export captured the graph for these shapes only; to run others, capture it "
                       "with frontends.trace(model, example_inputs, dynamic_shapes='auto')")
            raise SparsifyError(f"<root> ({self.model_name})",
                                f"{err}: the inputs were traced with shapes {self.shapes}; {fix}") from err


def _exported(model: torch.nn.Module, example_inputs: Sequence[Any], dynamic_shapes) -> fx.GraphModule:
    program = torch.export.export(model, tuple(example_inputs),
                                  dynamic_shapes=export_dynamic_shapes(dynamic_shapes, example_inputs))
    gm = program.module()
    guards = getattr(gm, "_guards_fn", None)
    if isinstance(guards, torch.nn.Module):
        shapes = [tuple(leaf.shape) for leaf in tree_leaves(tuple(example_inputs)) if isinstance(leaf, torch.Tensor)]
        gm._guards_fn = _ExplainedGuards(guards, type(model).__name__, shapes, dynamic_shapes is not None)
    return gm


def trace(
    model: torch.nn.Module,
    example_inputs: Sequence[Any] | None = None,
    *,
    dynamic_shapes: Any = None,
    concrete_args: dict[str, Any] | None = None,
    leaf_modules: Sequence[type | str] = (),
) -> fx.GraphModule:
    """Capture ``model`` as a GraphModule that `sparsify_graph` accepts.

    Parameters
    ----------
    model : an nn.Module in eval mode
    example_inputs : positional inputs; needed for the torch.export fallback
    dynamic_shapes : for the torch.export fallback, the input dims that may vary at run time
        (torch.export's argument, or ``"auto"`` for every dim the model allows); without it an
        exported graph runs only at the example's shapes
    concrete_args, leaf_modules : passed to symbolic tracing (fix a failing trace by
        fixing an argument's value or by keeping a module as one opaque call)

    Raises SparsifyError naming the module where capture broke, with the fix to try.
    """
    if not isinstance(model, torch.nn.Module):
        raise SparsifyError(None, f"trace expects an nn.Module, got {type(model).__name__}")
    model = made_permanent(model)  # torch.nn.utils.prune's masked weights as constants
    try:
        graph = _symbolic(model, concrete_args, leaf_modules)
        if example_inputs is None or not _opaque_attention(graph):
            return graph
        try:  # torch.export opens nn.MultiheadAttention up: its projections become linear ops.
            # Dims stay dynamic where the model allows, as the symbolic graph's did.
            return _exported(model, example_inputs, "auto" if dynamic_shapes is None else dynamic_shapes)
        except Exception as err:
            log.info("torch.export failed (%s: %s); keeping the symbolic graph, whose "
                     "nn.MultiheadAttention calls stay dense", type(err).__name__, err)
            return graph
    except Exception as err:
        where = getattr(err, "sparsepass_module", "<root>")
        symbolic_error = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        log.info("symbolic_trace failed in %s (%s); trying torch.export", where, symbolic_error)
    if example_inputs is None:
        raise SparsifyError(
            where,
            f"torch.fx.symbolic_trace failed here ({symbolic_error}). Fix: pass example_inputs so "
            f"sparsepass can fall back to torch.export, or mark the module a leaf "
            f"(leaf_modules=[{where.split(' (')[0]!r}]), or fix Python control flow on inputs with concrete_args.",
        )
    try:
        return _exported(model, example_inputs, dynamic_shapes)
    except Exception as err:
        export_error = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        raise SparsifyError(
            where,
            f"capture failed. torch.fx.symbolic_trace: {symbolic_error}; torch.export: {export_error}. "
            f"Fix: {_cache_hint(model, export_error)}mark the module a leaf "
            f"(leaf_modules=[{where.split(' (')[0]!r}]), pass concrete_args for "
            "Python control flow on inputs, or make the module export-friendly.",
        ) from err


def _opaque_attention(graph: fx.GraphModule) -> bool:
    """Whether symbolic tracing kept an nn.MultiheadAttention whole (a torch.nn leaf module):
    its packed q/k/v and output projections, the attention's largest weights, are hidden in it."""
    return any(node.op == "call_module" and isinstance(graph.get_submodule(node.target), torch.nn.MultiheadAttention)
               for node in graph.graph.nodes)


def _cache_hint(model: torch.nn.Module, export_error: str) -> str:
    """The fix for a Hugging Face model whose KV cache (an unregistered pytree) is an output."""
    config = getattr(model, "config", None)
    if getattr(config, "use_cache", False) and "Cache" in export_error:
        return ("set model.config.use_cache = False (the model returns its KV cache, which "
                "torch.export cannot flatten), or ")
    return ""
