"""Relax activations a sparse kernel can take as its epilogue.

The importer writes ReLU6 (and hardtanh, clamp) as ``R.clip(x, lo, hi)``; a
clip counts as ReLU6 or ReLU only with those bounds, and any other clip stays a
Relax op after the kernel.
"""

from __future__ import annotations

from tvm import relax
from tvm.relax.dpl import is_op, wildcard

#: Unary Relax ops -> the epilogue computing them
UNARY = {"relax.nn.relu": "relu", "relax.nn.gelu": "gelu",
         "relax.nn.gelu_tanh": "gelu_tanh", "relax.nn.silu": "silu", "relax.tanh": "tanh"}
_CLIP_BOUNDS = {(0.0, 6.0): "relu6"}


def activation_of(inner):
    """A dpl pattern: any activation the kernels might take, applied to ``inner``."""
    pattern = is_op("relax.clip")(inner, wildcard(), wildcard())
    for name in UNARY:
        pattern = is_op(name)(inner) | pattern
    return pattern


def is_activation(call) -> bool:
    """Whether ``call`` is an op ``activation_of`` matches (an epilogue or not)."""
    return isinstance(call, relax.Call) and getattr(call.op, "name", None) in (*UNARY, "relax.clip")


def epilogue_of(call) -> str | None:
    """The epilogue computing ``call``: "none" when it is no activation, None when it is one that
    no epilogue computes (a clip to other bounds)."""
    if not is_activation(call):
        return "none"
    name = call.op.name
    if name != "relax.clip":
        return UNARY[name]
    bounds = tuple(bound_value(bound) for bound in call.args[1:3])
    return _CLIP_BOUNDS.get(bounds)


def bound_value(bound) -> float | None:
    """A clip bound's value (a PrimValue or an IntImm/FloatImm), or None if it is not constant."""
    value = bound
    while not isinstance(value, (int, float)):
        if not hasattr(value, "value"):
            return None
        value = value.value
    return float(value)
