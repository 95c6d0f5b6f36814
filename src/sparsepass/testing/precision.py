"""Running code under one float32 matmul precision, PyTorch's CPU setting restored afterwards.

A float32 model sparsified under PyTorch's "bf16" precision multiplies in bfloat16 (see
SparsifyOptions.float32_precision); its reference must run under the same precision to be
comparable. PyTorch's own ``torch.backends.mkldnn.flags`` context also resets other oneDNN
flags, so this sets the matmul precision alone.
"""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def float32_matmul_precision(precision: str):
    """Within the block, ``torch.backends.mkldnn.matmul.fp32_precision`` is ``precision``
    ("bf16", "none", "ieee" or "tf32")."""
    before = torch.backends.mkldnn.matmul.fp32_precision
    torch.backends.mkldnn.matmul.fp32_precision = precision
    try:
        yield
    finally:
        torch.backends.mkldnn.matmul.fp32_precision = before
