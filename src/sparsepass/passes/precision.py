"""PyTorch's float32 matmul precision, as sparsepass's planner reads it.

Under "bf16" (``torch.backends.mkldnn.matmul.fp32_precision``, which
``torch.set_float32_matmul_precision("medium")`` sets on CPUs) PyTorch's float32
linears multiply in bfloat16; the planner may then give float32 layers the AMX
kernel, which computes the same (see SparsifyOptions.float32_precision).
"""

from __future__ import annotations

import contextlib

import torch

#: PyTorch's names for the precision of float32 matmuls on CPUs, and None (follow PyTorch).
FLOAT32_PRECISIONS = (None, "none", "ieee", "tf32", "bf16")


def check_float32_precision(precision: str | None) -> None:
    if precision not in FLOAT32_PRECISIONS:
        raise ValueError(f"float32_precision {precision!r}: expected one of {FLOAT32_PRECISIONS}")


def float32_in_bfloat16(precision: str | None) -> bool:
    """Whether float32 linears may multiply in bfloat16 under ``precision`` (None: PyTorch's
    setting now)."""
    check_float32_precision(precision)
    return (precision or torch.backends.mkldnn.matmul.fp32_precision) == "bf16"


@contextlib.contextmanager
def float32_matmul_precision(precision: str | None):
    """Within the block, ``torch.backends.mkldnn.matmul.fp32_precision`` is ``precision`` (None:
    as it is): a reference (or the dense layer a kernel is timed against) run under the precision
    a model was sparsified under. PyTorch's ``torch.backends.mkldnn.flags`` also resets other
    oneDNN flags."""
    if precision is None:
        yield
        return
    before = torch.backends.mkldnn.matmul.fp32_precision
    torch.backends.mkldnn.matmul.fp32_precision = precision
    try:
        yield
    finally:
        torch.backends.mkldnn.matmul.fp32_precision = before
