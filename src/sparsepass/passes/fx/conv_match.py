"""Recognising 2-D convolutions (and what can be fused after them) in a torch.fx graph.

``match_conv`` returns a `ConvSite` for Conv2d modules, ``F.conv2d`` and aten
``conv2d`` / ``convolution`` with a constant weight (a non-constant weight still
comes back, with ``why_dense`` set). ``fusable_tail`` finds what follows a conv
and can run in its epilogue: a ReLU, a residual add, or an add then a ReLU.
"""

from __future__ import annotations

import dataclasses
import operator

import torch
import torch.fx as fx
import torch.nn.functional as F

from sparsepass.passes.fx.activations import fusable_activation
from sparsepass.passes.fx.match import _constant, node_shape

aten = torch.ops.aten


@dataclasses.dataclass(frozen=True)
class ConvSite:
    """One conv found in a graph, with its hyper-parameters normalised to pairs."""

    node: fx.Node
    name: str
    x: fx.Node
    weight: torch.Tensor | None
    bias: torch.Tensor | None
    stride: tuple[int, int]
    padding: tuple[int, int] | str
    dilation: tuple[int, int]
    groups: int
    why_dense: str | None = None


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(int(v) for v in value)


def _from_module(gm: fx.GraphModule, node: fx.Node) -> ConvSite | None:
    module = gm.get_submodule(node.target)
    if not isinstance(module, torch.nn.Conv2d):
        return None
    why = None if module.padding_mode == "zeros" else f"padding_mode={module.padding_mode!r} stays dense"
    padding = module.padding if isinstance(module.padding, str) else _pair(module.padding)
    return ConvSite(node, node.target, node.args[0], module.weight.detach(),
                    None if module.bias is None else module.bias.detach(), _pair(module.stride), padding,
                    _pair(module.dilation), module.groups, why)


_CONV_FUNCTIONS = (F.conv2d, torch.conv2d, aten.conv2d.default)


def _from_function(gm: fx.GraphModule, node: fx.Node) -> ConvSite | None:
    if node.target is aten.convolution.default:
        x, w, b, stride, padding, dilation, transposed, _, groups = node.args
        if transposed:
            return None
    elif node.target in _CONV_FUNCTIONS:
        names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
        defaults = (None, None, None, 1, 0, 1, 1)
        values = [node.args[i] if i < len(node.args) else node.kwargs.get(n, d)
                  for i, (n, d) in enumerate(zip(names, defaults))]
        x, w, b, stride, padding, dilation, groups = values
    else:
        return None
    weight = _constant(gm, w)
    if weight is None or weight.dim() != 4:
        return ConvSite(node, node.name, x, None, None, (1, 1), (0, 0), (1, 1), 1,
                        "weight is not a constant 4-D attribute")
    label = w.target.removesuffix(".weight")
    bias = _constant(gm, b)
    why = "bias is not a constant" if b is not None and bias is None else None
    padding = padding if isinstance(padding, str) else _pair(padding)
    return ConvSite(node, label, x, weight, bias, _pair(stride), padding, _pair(dilation), int(groups), why)


def match_conv(gm: fx.GraphModule, node: fx.Node) -> ConvSite | None:
    """The ConvSite of ``node``, or None when it is not a 2-D convolution."""
    if node.op == "call_module":
        return _from_module(gm, node)
    if node.op == "call_function":
        return _from_function(gm, node)
    return None


_ADDS = (operator.add, torch.add, aten.add.Tensor)


def fusable_tail(gm: fx.GraphModule, node: fx.Node, allow_residual: bool):
    """(last node fused, residual node or None, epilogue) for what follows ``node``: an activation
    the kernels have as an epilogue, a residual add, or an add then an activation."""
    found = fusable_activation(gm, node)
    if found is not None:
        return found[0], None, found[1]
    if not allow_residual or len(node.users) != 1:
        return node, None, "none"
    [add] = node.users
    if add.op != "call_function" or add.target not in _ADDS or len(add.args) != 2 or add.kwargs:
        return node, None, "none"
    other = add.args[1] if add.args[0] is node else add.args[0]
    if not isinstance(other, fx.Node) or other is node or node_shape(other) is None \
            or node_shape(other) != node_shape(node):
        return node, None, "none"
    if _reaches(other, node):
        return node, None, "none"  # the residual depends on this node: cannot be its input
    after = fusable_activation(gm, add)
    if after is not None:
        return after[0], other, after[1]
    return add, other, "none"


def _reaches(node: fx.Node, target: fx.Node) -> bool:
    """Whether ``node`` is computed from ``target``."""
    stack, seen = [node], set()
    while stack:
        current = stack.pop()
        if current is target:
            return True
        if current in seen:
            continue
        seen.add(current)
        stack.extend(current.all_input_nodes)
    return False
