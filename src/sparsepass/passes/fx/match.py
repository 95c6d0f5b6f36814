"""Recognising linear layers in a torch.fx graph, at module, functional and aten level.

Each rule is data: a name, a one-line summary, and a matcher that returns a
`LinearSite` or None to decline. A site whose weight is not a constant still
comes back (with ``why_dense`` set), so the report can say why it stayed dense
instead of skipping it silently.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from typing import Callable

import torch
import torch.fx as fx
import torch.nn.functional as F

aten = torch.ops.aten


@dataclasses.dataclass(frozen=True)
class LinearSite:
    """One ``y = x @ W.T + b`` found in a graph.

    weight : the constant weight as [out_features, in_features], or None
    weight_attr : the attribute path the weight was read from (for naming/sharing)
    bias : a constant bias, or None
    bias_node : a bias computed in the graph (added after the kernel), or None
    why_dense : set when the site cannot be rewritten, saying why
    out : the node whose value the kernel computes, when not ``node`` itself: the view back
        to [..., N] of an addmm on a flattened x (then ``x`` is the unflattened input and
        ``x_view`` the flattening)
    """

    rule: str
    node: fx.Node
    name: str
    x: fx.Node
    weight: torch.Tensor | None = None
    weight_attr: str | None = None
    bias: torch.Tensor | None = None
    bias_node: fx.Node | None = None
    why_dense: str | None = None
    out: fx.Node | None = None
    x_view: fx.Node | None = None


@dataclasses.dataclass(frozen=True)
class Rule:
    name: str
    summary: str
    match: Callable[[fx.GraphModule, fx.Node], LinearSite | None]


def node_shape(node) -> tuple | None:
    """The shape recorded on ``node`` by ShapeProp or torch.export, else None."""
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    value = node.meta.get("val") if isinstance(node, fx.Node) else None
    source = meta if meta is not None else value
    return tuple(source.shape) if source is not None and hasattr(source, "shape") else None


def node_dtype(node) -> torch.dtype | None:
    """The dtype recorded on ``node`` by ShapeProp or torch.export, else None."""
    for key in ("tensor_meta", "val"):
        value = node.meta.get(key) if isinstance(node, fx.Node) else None
        if value is not None and hasattr(value, "dtype"):
            return value.dtype
    return None


_VIEWS = (torch.reshape, aten.view.default, aten.reshape.default, aten._unsafe_view.default)


def _is_view(node) -> bool:
    if not isinstance(node, fx.Node):
        return False
    return (node.op == "call_function" and node.target in _VIEWS) or (
        node.op == "call_method" and node.target in ("view", "reshape"))


def _unflattened(site: LinearSite) -> LinearSite:
    """``view(addmm(b, view(x, [-1, K]), W), [..., N])`` (Hugging Face's Conv1D) is a linear on x:
    the site then reads x and produces the outer view, so what follows it can be fused."""
    node, x = site.node, site.x
    if site.weight is None or not _is_view(x) or len(node.users) != 1:
        return site
    [after] = node.users
    inner, outer = node_shape(x.args[0]), node_shape(after)
    if not _is_view(after) or inner is None or outer is None:
        return site
    n, k = site.weight.shape
    if len(inner) < 2 or inner[-1] != k or outer != inner[:-1] + (n,):
        return site
    return dataclasses.replace(site, x=x.args[0], out=after, x_view=x)


def _attr(gm: fx.GraphModule, path: str):
    return functools.reduce(getattr, path.split("."), gm)


def _constant(gm: fx.GraphModule, node) -> torch.Tensor | None:
    """The tensor behind a get_attr node, else None."""
    if isinstance(node, fx.Node) and node.op == "get_attr":
        value = _attr(gm, node.target)
        if isinstance(value, torch.Tensor):
            return value.detach()
    return None


_TRANSPOSE_FUNCTIONS = {
    torch.t: "t", aten.t.default: "t",
    torch.transpose: "transpose", aten.transpose.int: "transpose",
    torch.permute: "permute", aten.permute.default: "permute",
}


def _transpose_kind(node: fx.Node) -> str | None:
    """"t", "transpose" or "permute" when ``node`` may transpose its first argument."""
    if node.op == "call_method" and node.target in ("t", "transpose", "permute"):
        return node.target
    if node.op == "call_function" and node.target is getattr and node.args[1:] == ("T",):
        return "t"
    if node.op == "call_function":
        return _TRANSPOSE_FUNCTIONS.get(node.target)
    return None


def _swaps_2d(kind: str, dims: tuple) -> bool:
    """Whether the transpose/permute ``dims`` exchange the two axes of a 2-D tensor."""
    if len(dims) == 1 and isinstance(dims[0], (list, tuple)):
        dims = tuple(dims[0])
    normal = tuple(d % 2 for d in dims if isinstance(d, int))
    if kind == "t":
        return True
    if kind == "transpose":
        return len(normal) == 2 and set(normal) == {0, 1}
    return normal == (1, 0)


def _transposed_constant(gm: fx.GraphModule, node) -> tuple[torch.Tensor, str] | None:
    """``(W, path)`` when ``node`` is the transpose of a constant 2-D W, else None."""
    if not isinstance(node, fx.Node):
        return None
    kind = _transpose_kind(node)
    weight = _constant(gm, node.args[0]) if kind and node.args else None
    if weight is None or weight.dim() != 2:
        return None
    dims = () if node.target is getattr else tuple(node.args[1:])
    return (weight, node.args[0].target) if _swaps_2d(kind, dims) else None


def _site(rule, node, x, weight_node, bias_node, gm, name=None) -> LinearSite:
    weight = _constant(gm, weight_node)
    label = name or (weight_node.target.removesuffix(".weight") if weight is not None else node.name)
    if weight is None:
        return LinearSite(rule, node, label, x, why_dense="weight is not a constant attribute")
    bias = _constant(gm, bias_node)
    dynamic_bias = bias_node if isinstance(bias_node, fx.Node) and bias is None else None
    return LinearSite(rule, node, label, x, weight, weight_node.target, bias, dynamic_bias)


def _linear_module(gm: fx.GraphModule, node: fx.Node) -> LinearSite | None:
    if node.op != "call_module" or not isinstance(gm.get_submodule(node.target), torch.nn.Linear):
        return None
    module = gm.get_submodule(node.target)
    bias = module.bias.detach() if module.bias is not None else None
    return LinearSite("nn.Linear", node, node.target, node.args[0], module.weight.detach(),
                      f"{node.target}.weight", bias)


#: Why a quantized layer stays as PyTorch runs it (no silent skip: it is reported).
QUANTIZED_REASON = ("quantized ({dtype}) layer: sparsepass's kernels compute float weights (float32, "
                    "bfloat16 or float16); to run it sparse, sparsify the float model instead of quantizing it")


def _quantized_module(gm: fx.GraphModule, node: fx.Node) -> LinearSite | None:
    """A torch.ao quantized (or dynamically quantized) Linear or Conv module: reported dense."""
    if node.op != "call_module":
        return None
    module = gm.get_submodule(node.target)
    if not type(module).__module__.startswith("torch.ao.nn.quantized") or not hasattr(module, "weight"):
        return None
    weight = module.weight() if callable(module.weight) else module.weight
    dtype = str(getattr(weight, "dtype", "int8")).removeprefix("torch.")
    return LinearSite(f"quantized {type(module).__name__}", node, node.target,
                      node.args[0] if node.args else None, why_dense=QUANTIZED_REASON.format(dtype=dtype))


#: Layers with weights that no rule rewrites, and why: reported dense rather than skipped silently.
_OTHER_LAYERS = "sparsepass rewrites linear layers (Linear, matmul, addmm) and 2-D convs; this one runs as PyTorch runs it"
_UNSUPPORTED_MODULES = {
    torch.nn.MultiheadAttention: ("one module call in this graph (symbolic tracing keeps torch.nn modules whole), so its "
                                  "projections stay dense; capture with sparsepass.frontends.trace(model, "
                                  "example_inputs), which exports such models, to expose them"),
    torch.nn.Conv1d: _OTHER_LAYERS, torch.nn.Conv3d: _OTHER_LAYERS, torch.nn.ConvTranspose1d: _OTHER_LAYERS,
    torch.nn.ConvTranspose2d: _OTHER_LAYERS, torch.nn.ConvTranspose3d: _OTHER_LAYERS, torch.nn.Bilinear: _OTHER_LAYERS,
    torch.nn.LSTM: _OTHER_LAYERS, torch.nn.GRU: _OTHER_LAYERS, torch.nn.RNN: _OTHER_LAYERS,
}
_UNSUPPORTED_FUNCTIONS = {
    F.conv1d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d, F.bilinear,
    aten.conv1d.default, aten.conv3d.default, aten.conv_transpose1d.default, aten.conv_transpose2d.input,
    aten.conv_transpose3d.input, aten.lstm.input, aten.gru.input,
}


def _unsupported_layer(gm: fx.GraphModule, node: fx.Node) -> LinearSite | None:
    """A layer with weights of a kind no rule rewrites (Conv1d, LSTM, an opaque MultiheadAttention...)."""
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        reason = next((why for kind, why in _UNSUPPORTED_MODULES.items() if isinstance(module, kind)), None)
        if reason is None:
            return None
        return LinearSite(f"nn.{type(module).__name__}", node, node.target, node.args[0] if node.args else None,
                          why_dense=reason)
    if node.op == "call_function" and node.target in _UNSUPPORTED_FUNCTIONS:
        weight = node.args[1] if len(node.args) > 1 else None
        name = weight.target.removesuffix(".weight") if isinstance(weight, fx.Node) and weight.op == "get_attr" \
            else node.name
        return LinearSite(getattr(node.target, "__name__", str(node.target)), node, name, node.args[0],
                          why_dense=_OTHER_LAYERS)
    return None


_LINEAR_FUNCTIONS = (F.linear, torch._C._nn.linear, aten.linear.default)


def _linear_function(gm: fx.GraphModule, node: fx.Node) -> LinearSite | None:
    if node.op != "call_function" or node.target not in _LINEAR_FUNCTIONS:
        return None
    args = list(node.args) + [None] * (3 - len(node.args))
    x = args[0] if args[0] is not None else node.kwargs.get("input")
    weight = args[1] if args[1] is not None else node.kwargs.get("weight")
    bias = args[2] if args[2] is not None else node.kwargs.get("bias")
    return _site("F.linear", node, x, weight, bias, gm)


_MATMULS = (torch.matmul, operator.matmul, aten.matmul.default, aten.mm.default)


def _matmul(gm: fx.GraphModule, node: fx.Node) -> LinearSite | None:
    """``x @ W`` with W constant [K, N] (weight W.T), or ``x @ W.t()`` (weight W)."""
    is_call = node.op == "call_function" and node.target in _MATMULS
    is_method = node.op == "call_method" and node.target == "matmul"
    if not (is_call or is_method) or len(node.args) != 2:
        return None
    x, rhs = node.args
    transposed = _transposed_constant(gm, rhs)
    if transposed is not None:
        weight, path = transposed
        return LinearSite("matmul", node, path.removesuffix(".weight"), x, weight, path)
    weight = _constant(gm, rhs)
    if weight is None:
        return LinearSite("matmul", node, node.name, x,
                          why_dense="right operand is not a constant attribute")
    if weight.dim() != 2:
        return LinearSite("matmul", node, rhs.target, x,
                          why_dense=f"constant operand has {weight.dim()} dims; only 2-D weights")
    return LinearSite("matmul", node, rhs.target, x, weight.t(), rhs.target)


_ADDMMS = (torch.addmm, aten.addmm.default)


def _addmm(gm: fx.GraphModule, node: fx.Node) -> LinearSite | None:
    """``addmm(b, x, W.t())`` (exporters' nn.Linear) or ``addmm(b, x, W)`` with W [K, N]
    (Hugging Face's Conv1D: GPT-2's projections)."""
    if node.op != "call_function" or node.target not in _ADDMMS or len(node.args) != 3:
        return None
    bias_node, x, rhs = node.args
    scales = {key: node.kwargs[key] for key in ("beta", "alpha") if node.kwargs.get(key, 1) != 1}
    if scales:
        return LinearSite("addmm", node, node.name, x,
                          why_dense="addmm scales its terms (" + ", ".join(f"{k}={v}" for k, v in scales.items())
                          + "); only beta=alpha=1 is rewritten")
    transposed = _transposed_constant(gm, rhs)
    if transposed is not None:
        weight, path = transposed
    elif (plain := _constant(gm, rhs)) is not None and plain.dim() == 2:
        weight, path = plain.t(), rhs.target
    else:
        return LinearSite("addmm", node, node.name, x, why_dense="weight is not a constant attribute")
    bias = _constant(gm, bias_node)
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        bias = None  # a constant [M, N] or [1, N] term: added after the kernel, broadcasting as addmm does
    dynamic_bias = bias_node if bias is None else None
    site = LinearSite("addmm", node, path.removesuffix(".weight"), x, weight, path, bias, dynamic_bias)
    return _unflattened(site) if dynamic_bias is None else site


RULES: tuple[Rule, ...] = (
    Rule("nn.Linear", "call_module Linear(x) => bsr_linear(x, W.bsr, b)", _linear_module),
    Rule("quantized", "call_module quantized Linear/Conv(x) => reported, left as it is", _quantized_module),
    Rule("unsupported", "Conv1d/Conv3d/ConvTranspose/RNN/opaque attention => reported, left as it is",
         _unsupported_layer),
    Rule("F.linear", "linear(x, W, b) => bsr_linear(x, W.bsr, b)", _linear_function),
    Rule("matmul", "x @ W => bsr_linear(x, W.T.bsr); x @ W.t() => bsr_linear(x, W.bsr)", _matmul),
    Rule("addmm", "addmm(b, x, W.t()) => bsr_linear(x, W.bsr, b); addmm(b, x, W) => bsr_linear(x, W.T.bsr, b)",
         _addmm),
)


def match_linear(gm: fx.GraphModule, node: fx.Node, rules: tuple[Rule, ...] = RULES) -> LinearSite | None:
    """The LinearSite of ``node`` from the first rule that matches it, or None."""
    for rule in rules:
        site = rule.match(gm, node)
        if site is not None:
            return site
    return None
