"""Custom ops for convolutions: ``sparsepass::pattern_conv2d`` (3x3 PCONV) and
``sparsepass::bsr_conv1x1`` (1x1 conv as BSR in NCHW), with fake kernels for export."""

from __future__ import annotations

from typing import Optional

import torch

from sparsepass.codegen import runtime
from sparsepass.codegen.build import get_kernel
from sparsepass.errors import SparsifyError
from sparsepass.ops.registry import kernel_op
from sparsepass.ops.specs import check_dtype, conv_spec, device_of, linear_spec, no_residual


def _check(x: torch.Tensor, spec, channels: int, layer: str, spatial: tuple[int, int] | None = None,
           device: str = "cpu") -> None:
    check_dtype(x, spec, layer)
    if x.device.type != device:
        raise SparsifyError(layer, f"input is on {x.device}; the kernel runs on {device} "
                                   "(sparsify_graph's target)")
    if x.dim() != 4 or x.shape[1] != channels or (spatial and tuple(x.shape[2:]) != spatial):
        expected = f"[N, {channels}, {spatial[0]}, {spatial[1]}]" if spatial else f"[N, {channels}, H, W]"
        raise SparsifyError(layer, f"input of shape {tuple(x.shape)} does not match {expected} "
                                   "(the kernel is specialised to the shape seen when sparsifying)")


def _residual(residual: torch.Tensor | None, spec, out: torch.Tensor, layer: str) -> torch.Tensor:
    """The residual the kernel adds (checked against the output's shape and dtype), or the
    no-residual stand-in."""
    if not spec.residual:
        return no_residual(out.device.type)
    if residual is None or tuple(residual.shape) != tuple(out.shape):
        raise SparsifyError(layer, f"residual input must have the output's shape {tuple(out.shape)}, "
                                   f"got {None if residual is None else tuple(residual.shape)}")
    check_dtype(residual, spec, layer, "residual")
    return residual.contiguous()


def _pattern_conv2d_fake(x, offsets, weights, cols, ranges, bias, residual, spec, layer):
    s = conv_spec(spec)
    return x.new_empty((x.shape[0], s.out_channels, s.out_height, s.out_width))


@kernel_op("pattern_conv2d", _pattern_conv2d_fake)
def pattern_conv2d(x: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor, cols: torch.Tensor,
                   ranges: torch.Tensor, bias: torch.Tensor, residual: Optional[torch.Tensor], spec: str,
                   layer: str) -> torch.Tensor:
    """A pattern-pruned 3x3 conv (+ bias, + residual, + epilogue per the spec), NCHW, in the
    spec's dtype."""
    s = conv_spec(spec)
    device = device_of(s)
    _check(x, s, s.in_channels, layer, (s.height, s.width), device)
    out = torch.empty(x.shape[0], s.out_channels, s.out_height, s.out_width, dtype=x.dtype, device=x.device)
    res = _residual(residual, s, out, layer)
    if device == "cpu":
        runtime.set_num_threads(torch.get_num_threads())
    get_kernel(s)(x.contiguous(), offsets, weights, cols, ranges, bias, res, out)
    return out


def _bsr_conv1x1_fake(x, data, indices, indptr, parts, bias, residual, stride, spec, layer):
    return x.new_empty((x.shape[0], linear_spec(spec).out_features,
                        -(-x.shape[2] // stride[0]), -(-x.shape[3] // stride[1])))


@kernel_op("bsr_conv1x1", _bsr_conv1x1_fake)
def bsr_conv1x1(x: torch.Tensor, data: torch.Tensor, indices: torch.Tensor, indptr: torch.Tensor,
                parts: torch.Tensor, bias: torch.Tensor, residual: Optional[torch.Tensor], stride: list[int],
                spec: str, layer: str) -> torch.Tensor:
    """A 1x1 conv (no padding; a stride reads every stride-th position) with a BSR weight
    (+ bias, + residual, + epilogue per the spec), NCHW, in the spec's dtype."""
    s = linear_spec(spec)
    _check(x, s, s.in_features, layer)
    if tuple(stride) != (1, 1):
        x = x[:, :, ::stride[0], ::stride[1]]
    n, _, h, w = x.shape
    out = torch.empty(n, s.out_features, h, w, dtype=x.dtype)
    res = _residual(residual, s, out, layer)
    runtime.set_num_threads(torch.get_num_threads())
    get_kernel(s)(x.contiguous().reshape(n, s.in_features, h * w), data, indices, indptr, parts, bias,
                  res.reshape(n, s.out_features, h * w) if s.residual else res,
                  out.reshape(n, s.out_features, h * w))
    return out
