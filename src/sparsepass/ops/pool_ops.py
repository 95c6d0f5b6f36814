"""Custom op ``sparsepass::max_pool2d``: NCHW float32 max pooling (+ ReLU) on a generated
kernel, with a fake kernel for export."""

from __future__ import annotations

import torch

from sparsepass.codegen import runtime
from sparsepass.codegen.build import get_kernel
from sparsepass.errors import SparsifyError
from sparsepass.ops.registry import kernel_op
from sparsepass.ops.specs import pool_spec


def _max_pool2d_fake(x, spec, layer):
    s = pool_spec(spec)
    return x.new_empty((x.shape[0], x.shape[1], s.out_height, s.out_width))


@kernel_op("max_pool2d", _max_pool2d_fake)
def max_pool2d(x: torch.Tensor, spec: str, layer: str) -> torch.Tensor:
    """Max pooling of an [N, C, H, W] CPU tensor in the spec's dtype (+ ReLU per the spec)."""
    s = pool_spec(spec)
    if str(x.dtype) != "torch." + s.dtype or x.device.type != "cpu" or x.dim() != 4 \
            or tuple(x.shape[2:]) != (s.height, s.width):
        raise SparsifyError(layer, f"input {x.dtype} {tuple(x.shape)} on {x.device} does not match the "
                                   f"kernel's {s.dtype} [N, C, {s.height}, {s.width}] on cpu (the kernel "
                                   "is specialised to the shape and dtype seen when sparsifying)")
    n, c = x.shape[:2]
    out = torch.empty(n, c, s.out_height, s.out_width, dtype=x.dtype)
    if n * c:
        runtime.set_num_threads(torch.get_num_threads())
        get_kernel(s)(x.contiguous().view(n * c, s.height, s.width),
                      out.view(n * c, s.out_height, s.out_width))
    return out
