"""2-D max pooling for CPUs (LLVM), NCHW, float32 or half precision, with an optional ReLU after it.

Pooling is not sparse, but it sits between the sparse convs of every ResNet:
PyTorch's NCHW ``max_pool2d`` runs its window loops in scalar code, 6.6 ms for
ResNet-18's 64x112x112 stem output on one thread against 1.4 ms for a round
trip through channels-last, and so took a quarter of a sparsified ResNet-18's
time. This kernel takes 0.16 ms there.

Per output row it first folds the window's input rows into one padded row
(contiguous vectors), then takes each output's maximum across the window's
columns from that row (strided reads that LLVM vectorises with shuffles).
Planes (image x channel) are the parallel tasks, so one kernel serves any batch
and channel count at a given height and width. Maxima propagate NaN as PyTorch's
do; a ReLU after the pool (``relu(max) == max(relu)``) runs in its store.
Half-precision planes are widened to float32 as they are read and narrowed as
they are stored, which is exact: a maximum is one of its inputs.
"""

from __future__ import annotations

import dataclasses

from sparsepass.codegen.io_dtype import check_io_dtype, narrow, widen
from sparsepass.codegen.spec import SpecMixin
from sparsepass.codegen.tvm_api import T

ENTRY = "max_pool"
LANES = 16


def pooled_size(size: int, kernel: int, stride: int, padding: int, ceil_mode: bool) -> int:
    """Output length along one axis, PyTorch's rule (dilation 1)."""
    span = size + 2 * padding - kernel
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1  # the last window would start in the right padding
    return out


@dataclasses.dataclass(frozen=True)
class PoolSpec(SpecMixin):
    """A max pool over ``height`` x ``width`` planes: window, stride, padding, epilogue."""

    height: int
    width: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    target: str
    ceil_mode: bool = False
    epilogue: str = "none"  # "none" or "relu"
    dtype: str = "float32"  # of the input and output (io_dtype.IO_DTYPES)
    op: str = "max_pool"

    def __post_init__(self):
        check_io_dtype(self.dtype)
        if self.epilogue not in ("none", "relu"):
            raise ValueError(f"max pool epilogue must be 'none' or 'relu', got {self.epilogue!r}")
        if any(2 * p > k for p, k in zip(self.padding, self.kernel)):
            raise ValueError(f"padding {self.padding} exceeds half the window {self.kernel}")

    @property
    def out_height(self) -> int:
        return pooled_size(self.height, self.kernel[0], self.stride[0], self.padding[0], self.ceil_mode)

    @property
    def out_width(self) -> int:
        return pooled_size(self.width, self.kernel[1], self.stride[1], self.padding[1], self.ceil_mode)


def _nan_max(a, b):
    """max(a, b) that returns NaN when ``a`` is NaN (PyTorch's pooling and ReLU do)."""
    return T.if_then_else((a > b) | T.isnan(a), a, b)


def _window_max(load, start, size: int):
    """The NaN-propagating maximum of ``load(start) .. load(start + size - 1)``."""
    best = load(start)
    for k in range(1, size):
        best = _nan_max(load(start + k), best)
    return best


def generate(spec: PoolSpec):
    (kh, kw), (sh, sw), (ph, pw) = spec.kernel, spec.stride, spec.padding
    height, width, out_h, out_w = spec.height, spec.width, spec.out_height, spec.out_width
    # The folded row holds padded columns 0 .. (out_w - 1) * sw + kw - 1, rounded up to vectors.
    row_len = -(-max((out_w - 1) * sw + kw, width + pw) // LANES) * LANES
    relu = spec.epilogue == "relu"
    dt = spec.dtype

    def store(value):
        return narrow(_nan_max(value, T.float32(0)) if relu else value, dt)

    @T.prim_func
    def kernel(x: T.handle, y: T.handle):
        T.func_attr({"global_symbol": ENTRY, "tirx.noalias": True, "tirx.is_scheduled": True,
                     "sparsepass.kernel": "max_pool"})
        PLANES = T.int64()
        X = T.match_buffer(x, (PLANES, height, width), dt, align=4, offset_factor=1)
        Y = T.match_buffer(y, (PLANES, out_h, out_w), dt, align=4, offset_factor=1)
        for plane in T.parallel(PLANES):
            # One buffer per task: allocated inside the row loop it would be a workspace
            # allocation per row (0.36 ms of 0.5 at ResNet-18's stem).
            row = T.alloc_buffer((row_len,), "float32", scope="local")
            for oh in range(out_h):
                for i in T.vectorized(row_len):
                    row[i] = T.min_value("float32")
                for k in range(kh):
                    r = oh * sh - ph + k
                    if r >= 0 and r < height:
                        for w in T.vectorized(width):
                            row[w + pw] = _nan_max(widen(X[plane, r, w], dt), row[w + pw])
                for ow in range(out_w):  # LLVM's loop vectoriser handles the stride
                    Y[plane, oh, ow] = store(_window_max(lambda i: row[i], ow * sw, kw))

    return kernel
