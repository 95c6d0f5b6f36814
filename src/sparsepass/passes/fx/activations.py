"""Activations that can be folded into a sparse kernel's epilogue, at every graph level.

``fusable_activation(gm, node)`` returns the single activation node that
consumes ``node`` and its epilogue name, or None when there is none or it
cannot be fused (other users of ``node``, an unknown GELU approximation, a
clamp to bounds no epilogue has, ...). Clamps and hardtanh count when their
bounds make them ReLU ([0, inf)) or ReLU6 ([0, 6]).
"""

from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

aten = torch.ops.aten

_FUNCTIONS = {
    F.relu: "relu", torch.relu: "relu", aten.relu.default: "relu", aten.relu_.default: "relu",
    F.relu6: "relu6", aten.relu6.default: "relu6",
    F.gelu: "gelu", aten.gelu.default: "gelu",
    F.silu: "silu", aten.silu.default: "silu",
    torch.tanh: "tanh", F.tanh: "tanh", aten.tanh.default: "tanh",
}
_MODULES = {nn.ReLU: "relu", nn.GELU: "gelu", nn.SiLU: "silu", nn.Tanh: "tanh"}
_METHODS = {"relu": "relu", "relu_": "relu", "tanh": "tanh"}

#: Clamping calls -> the (name, default) of their lower and upper bound arguments after the input.
_CLAMPS = {
    F.hardtanh: (("min_val", -1.0), ("max_val", 1.0)),
    aten.hardtanh.default: (("min_val", -1.0), ("max_val", 1.0)),
    aten.hardtanh_.default: (("min_val", -1.0), ("max_val", 1.0)),
    torch.clamp: (("min", None), ("max", None)),
    torch.clip: (("min", None), ("max", None)),
    aten.clamp.default: (("min", None), ("max", None)),
    "clamp": (("min", None), ("max", None)),
    "clip": (("min", None), ("max", None)),
}
_BOUNDED = {(0, None): "relu", (0, 6): "relu6"}


def _clamp_name(node: fx.Node, gm: fx.GraphModule) -> str | None:
    """"relu" or "relu6" for a clamp or hardtanh with those bounds, else None."""
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        if not isinstance(module, nn.Hardtanh):
            return None
        bounds = (module.min_val, module.max_val)
    elif node.op in ("call_function", "call_method") and node.target in _CLAMPS:
        params = _CLAMPS[node.target]
        bounds = tuple(node.args[i + 1] if len(node.args) > i + 1 else node.kwargs.get(name, default)
                       for i, (name, default) in enumerate(params))
    else:
        return None
    if not all(b is None or (isinstance(b, (int, float)) and not isinstance(b, bool)) for b in bounds):
        return None  # tensor bounds
    return _BOUNDED.get(bounds)


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
    if name is None:
        return _clamp_name(node, gm)
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
