"""Pattern-sparse 3x3 convolution (PCONV) for CPUs (LLVM), NCHW float32.

Each output filter keeps some of its 3x3 kernels (connectivity sparsity), and
each kept kernel keeps a few taps (pattern sparsity). The weight is stored as
CSR over output filters: entry e is a kept kernel with its input channel, its
taps as offsets into a zero-padded input row-major plane (``dy * pitch + dx``),
and their weights (padded with zero weights to ``taps`` per kernel).

The input is first copied into a zero-padded workspace, so every tap is a
constant offset: no bounds checks in the inner loop. For stride s, each
padded row is stored as s phases (column ``j * s + phase`` at ``phase * ppitch
+ j``), so a strided conv reads contiguous vectors too (strided loads made
stride-2 layers 3-4x slower than dense). A register tile is
``rows`` output rows times the whole (padded) output width, vectorised along
the width; for each kept kernel and tap, one weight is broadcast and
multiplied into the tile. Parallel over (image, filter, row tile); filter
order decides which thread gets which filters (see passes ReorderFilters).
Bias, an optional residual input and ReLU are fused into the store.
"""

from __future__ import annotations

import dataclasses

from sparsepass.codegen.epilogue import epilogue_fn
from sparsepass.codegen.spec import SpecMixin
from sparsepass.codegen.tvm_api import T

ENTRY = "pattern_conv"
LANES = 16
#: Accumulator vectors per register tile (AVX-512 has 32 registers).
TILE_VECTORS = 16


@dataclasses.dataclass(frozen=True)
class ConvSpec(SpecMixin):
    """A 3x3 pattern conv: shapes, stride/padding, taps per kept kernel, epilogue."""

    in_channels: int
    out_channels: int
    height: int
    width: int
    stride: int
    padding: int
    taps: int
    target: str
    epilogue: str = "none"  # "none" or "relu"
    residual: bool = False
    op: str = "pattern_conv"

    @property
    def out_height(self) -> int:
        return (self.height + 2 * self.padding - 3) // self.stride + 1

    @property
    def out_width(self) -> int:
        return (self.width + 2 * self.padding - 3) // self.stride + 1

    @property
    def vector_width(self) -> int:
        """Output width rounded up to whole vectors (the extra lanes are computed, not stored)."""
        return -(-self.out_width // LANES) * LANES

    @property
    def phase_pitch(self) -> int:
        """Length of one phase of a padded row: every lane of every vector, plus the taps' reach."""
        return max(-(-(self.width + 2 * self.padding) // self.stride), self.vector_width + 2 // self.stride)

    @property
    def pitch(self) -> int:
        """Row pitch of the padded input plane (all phases of one padded row)."""
        return self.stride * self.phase_pitch

    def tap_offset(self, dy: int, dx: int) -> int:
        """How the kernel for this spec's target stores tap (dy, dx): on CPUs its offset in the
        padded input plane (from tap (0, 0) of the same output), on CUDA its index dy * 3 + dx."""
        if self.target_dict["kind"] == "cuda":
            return dy * 3 + dx
        return dy * self.pitch + (dx % self.stride) * self.phase_pitch + dx // self.stride

    @property
    def padded_rows(self) -> int:
        """Rows of the padded input plane (+1 spare row for the last vectors' spare lanes)."""
        return max(self.height + 2 * self.padding, self.stride * (self.out_height - 1) + 3) + 1

    @property
    def tile_rows(self) -> int:
        return max(1, min(self.out_height, TILE_VECTORS * LANES // self.vector_width))


def generate(spec: ConvSpec):
    c_in, c_out, h, w = spec.in_channels, spec.out_channels, spec.height, spec.width
    s, p, k = spec.stride, spec.padding, spec.taps
    oh, ow, vw = spec.out_height, spec.out_width, spec.vector_width
    pitch, ppitch, rows_p, tr = spec.pitch, spec.phase_pitch, spec.padded_rows, spec.tile_rows
    plane = rows_p * pitch
    act = epilogue_fn(spec.epilogue)
    full_tiles, tail_rows = oh // tr, oh % tr

    def in_at(xp, n, c, row, col, off):
        return xp[(n * c_in + c) * plane + row * s * pitch + col + off]

    def first_j(phase):
        # The first index j of a phase whose column j * s + phase - p is an input column.
        return T.max(0, (p - phase + s - 1) // s)

    def count_j(phase):
        return T.max(0, (w + p - phase + s - 1) // s - first_j(phase))

    @T.macro
    def copy_padded(X, xp, nc):
        for q in T.vectorized(plane):
            xp[nc * plane + q] = T.float32(0)
        for row in range(h):
            for phase in T.unroll(s):
                for j in range(count_j(phase)):
                    xp[nc * plane + (row + p) * pitch + phase * ppitch + first_j(phase) + j] = X[
                        nc // c_in, nc % c_in, row, (first_j(phase) + j) * s + phase - p]

    def epilogue(value, residual, n, o, row, col):
        if spec.residual:
            value = value + residual[n, o, row, col]
        return act(value)

    @T.macro
    def tile(X, xp, offsets, wts, cols, rowptr, bias, R, Y, n, o, r0, rows):
        acc = T.alloc_buffer((rows, vw), "float32", scope="local")
        for i in T.unroll(rows):
            for v in T.vectorized(vw):
                acc[i, v] = bias[o]
        for j in range(rowptr[o + 1] - rowptr[o]):
            for t in T.unroll(k):
                for i in T.unroll(rows):
                    for v in T.vectorized(vw):
                        acc[i, v] = acc[i, v] + wts[rowptr[o] + j, t] * in_at(
                            xp, n, cols[rowptr[o] + j], r0 + i, v, offsets[rowptr[o] + j, t])
        for i in T.unroll(rows):
            for v in T.vectorized(vw):
                if v < ow:
                    Y[n, o, r0 + i, v] = epilogue(acc[i, v], R, n, o, r0 + i, v)

    residual_shape = (1,) if not spec.residual else None

    @T.prim_func
    def kernel(x: T.handle, off: T.handle, wt: T.handle, col: T.handle, ptr: T.handle, bi: T.handle,
               res: T.handle, y: T.handle):
        T.func_attr({"global_symbol": ENTRY, "tirx.noalias": True, "tirx.is_scheduled": True,
                     "sparsepass.kernel": "pattern_conv"})
        N = T.int64()
        NNZ = T.int64()
        X = T.match_buffer(x, (N, c_in, h, w), "float32", align=4, offset_factor=1)
        offsets = T.match_buffer(off, (NNZ, k), "int32", align=4)
        wts = T.match_buffer(wt, (NNZ, k), "float32", align=4)
        cols = T.match_buffer(col, (NNZ,), "int32", align=4)
        rowptr = T.match_buffer(ptr, (c_out + 1,), "int32", align=4)
        bias = T.match_buffer(bi, (c_out,), "float32", align=4)
        R = T.match_buffer(res, residual_shape or (N, c_out, oh, ow), "float32", align=4, offset_factor=1)
        Y = T.match_buffer(y, (N, c_out, oh, ow), "float32", align=4, offset_factor=1)
        xp = T.alloc_buffer((N * c_in * plane + pitch,), "float32")
        for nc in T.parallel(N * c_in):
            copy_padded(X, xp, nc)
        for t in T.parallel(N * c_out * full_tiles):
            tile(X, xp, offsets, wts, cols, rowptr, bias, R, Y, t // (c_out * full_tiles),
                 t // full_tiles % c_out, t % full_tiles * tr, tr)
        if tail_rows > 0:
            for t in T.parallel(N * c_out):
                tile(X, xp, offsets, wts, cols, rowptr, bias, R, Y, t // c_out, t % c_out,
                     full_tiles * tr, tail_rows)

    return kernel
