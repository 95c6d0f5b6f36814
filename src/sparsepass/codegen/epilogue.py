"""Elementwise epilogues applied to a kernel's accumulator before it is stored.

Each maps a TIR float32 expression to a TIR expression with the same meaning
as the PyTorch function of the same name (``gelu`` is the exact erf form).
"""

from __future__ import annotations

import math

from sparsepass.codegen.tvm_api import tirx


def _none(v):
    return v


def _relu(v):
    return tirx.max(v, tirx.const(0, "float32"))


def _gelu(v):
    half = tirx.const(0.5, "float32")
    return v * half * (tirx.const(1, "float32") + tirx.erf(v * tirx.const(1 / math.sqrt(2), "float32")))


def _silu(v):
    return v * tirx.sigmoid(v)


def _tanh(v):
    return tirx.tanh(v)


_EPILOGUES = {"none": _none, "relu": _relu, "gelu": _gelu, "silu": _silu, "tanh": _tanh}


def epilogue_fn(name: str):
    """The TIR expression builder for epilogue ``name`` (see spec.EPILOGUES)."""
    try:
        return _EPILOGUES[name]
    except KeyError:
        raise ValueError(f"unknown epilogue {name!r}; expected one of {sorted(_EPILOGUES)}") from None
