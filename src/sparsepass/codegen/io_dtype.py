"""The dtypes a CPU kernel reads its activations in and writes its output in.

Kernels always accumulate in float32, and sparsepass packs weights and biases
as float32 (widening bfloat16 and float16 is exact). A model run in bfloat16 or
float16 hands the kernel half-precision activations: the kernel widens each
value it reads and rounds each value it stores (round to nearest even, as
PyTorch does), so the model needs no casts around the call, which cost as much
as a 10%-dense kernel (0.13 ms to round one 128 x 3072 output in PyTorch).
"""

from __future__ import annotations

from sparsepass.codegen.tvm_api import tirx

#: Activation dtypes a kernel can be built for (the names torch and TVM share).
IO_DTYPES = ("float32", "bfloat16", "float16")

#: The half-precision ones.
HALF_DTYPES = ("bfloat16", "float16")


def check_io_dtype(dtype: str) -> None:
    if dtype not in IO_DTYPES:
        raise ValueError(f"activation dtype {dtype!r} is not supported; expected one of {IO_DTYPES}")


def widen(value, dtype: str):
    """A value read from a ``dtype`` buffer, as the float32 the kernel computes in."""
    return value if dtype == "float32" else tirx.Cast("float32", value)


def narrow(value, dtype: str):
    """A float32 result, rounded to ``dtype`` for storing."""
    return value if dtype == "float32" else tirx.Cast(dtype, value)
