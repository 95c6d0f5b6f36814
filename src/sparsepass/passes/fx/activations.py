"""Activations that can be folded into a sparse kernel's epilogue, at every graph level.

``fusable_activation(gm, node)`` returns the single activation node that
consumes ``node`` and its epilogue name, or None when there is none or it
cannot be fused (other users of ``node``, an unknown GELU approximation, ...).
"""

from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

aten = torch.ops.aten

_FUNCTIONS = {
    F.relu: "relu", torch.relu: "relu", aten.relu.default: "relu", aten.relu_.default: "relu",
    F.gelu: "gelu", aten.gelu.default: "gelu",
    F.silu: "silu", aten.silu.default: "silu",
    torch.tanh: "tanh", F.tanh: "tanh", aten.tanh.default: "tanh",
}
_MODULES = {nn.ReLU: "relu", nn.GELU: "gelu", nn.SiLU: "silu", nn.Tanh: "tanh"}
_METHODS = {"relu": "relu", "relu_": "relu", "tanh": "tanh"}


def _gelu_variant(node: fx.Node, gm: fx.GraphModule) -> str | None:
    """"gelu" (exact, erf) or "gelu_tanh" (PyTorch's tanh approximation), else None."""
    if node.op == "call_module":
        approximate = gm.get_submodule(node.target).approximate
    else:
        approximate = node.kwargs.get("approximate", node.args[1] if len(node.args) > 1 else "none")
    return {"none": "gelu", "tanh": "gelu_tanh"}.get(approximate)


def activation_name(node: fx.Node, gm: fx.GraphModule) -> str | None:
    """The epilogue name of the activation ``node`` computes, or None."""
    if node.op == "call_function":
        name = _FUNCTIONS.get(node.target)
    elif node.op == "call_method":
        name = _METHODS.get(node.target)
    elif node.op == "call_module":
        name = _MODULES.get(type(gm.get_submodule(node.target)))
    else:
        name = None
    return _gelu_variant(node, gm) if name == "gelu" else name


def fusable_activation(gm: fx.GraphModule, node: fx.Node) -> tuple[fx.Node, str] | None:
    """The activation that alone consumes ``node`` (as its first argument), and its name."""
    if len(node.users) != 1:
        return None
    [user] = node.users
    if not user.args or user.args[0] is not node:
        return None
    name = activation_name(user, gm)
    return (user, name) if name else None
