"""Pattern-sparse 3x3 convolution (PCONV) for CPUs (LLVM), NCHW, computed in float32.

Each output filter keeps some of its 3x3 kernels (connectivity sparsity), and
each kept kernel keeps a few taps (pattern sparsity). The weight is stored as
CSR over output filters of tap columns (pattern_format.to_column_csr): an
entry is one column dx of a kept kernel, its input channel, its top tap row
and up to three tap weights down the column.

The input is first copied into a zero-padded workspace in which each padded
row is stored three times, shifted by the tap column dx = 0, 1, 2 (and
subsampled by the stride): copy dx holds padded column ``j * s + dx`` at
``j``. Every tap then reads whole aligned vectors at a constant offset: no
bounds checks, no strided loads, and no vector load that splits a cache line
(unaligned taps cost 1.5x).

Maps at most half a vector wide (ResNet's 7x7 stage) put ``rows_per_vector``
output rows side by side in one vector (two 7-wide rows in 16 lanes, instead of
one row filling 7): workspace row a then holds, in lane block m, padded row
a + m * s, so every tap still reads one aligned vector (512 channels at 7x7:
1.24x faster, a 14x14 stride-2 conv 1.5x).

A register tile is ``tile_rows`` output rows times ``tile_vectors`` vectors
of the width (16 accumulators). For a column entry the tile loads each input
row it needs once and multiplies it into every output row whose tap reads it:
two taps one row apart load rows + 1 vectors for 2 * rows multiply-adds.
Vector loads, not multiply-adds, bound this loop (about 1.3 vector loads per
cycle on Zen 5 against 2 FMAs). Entries are grouped by span (0-2 rows between
the column's top and bottom tap) so each group's loop is straight-line code;
a tall tile (8 rows x 2 vectors) shares more rows than a wide one.

A filter adds all its entries of a channel block in one go. A block is as many
input channels as keep a tile's workspace rows in L2 (all of them at ResNet
shapes): a filter's three span loops are then long, their exits rarely
mispredicted, and no partial sums are stored. With L1-sized blocks each
(filter, block) cost about 130 cycles of loop exits and partial sums, as much
as its L1 hits saved; the kernel is bound by load issue, not by L2. Partial
sums (a per-task buffer) remain for layers too wide for one block. Parallel tasks are (image, row tile,
column tile, part of the filters); filter order decides which task gets which
filters (see passes ReorderFilters). Bias, an optional residual input and ReLU
are fused into the last block's store.
"""

from __future__ import annotations

import dataclasses

from sparsepass.codegen.epilogue import epilogue_fn
from sparsepass.codegen.io_dtype import check_io_dtype, narrow, widen
from sparsepass.codegen.spec import SpecMixin
from sparsepass.codegen.tvm_api import T

ENTRY = "pattern_conv"
LANES = 16
#: Accumulator vectors per register tile (AVX-512 has 32 registers; 24 spilled).
TILE_VECTORS = 16
#: Vectors across the width per tile where the width allows (8 x 2 beat 4 x 4 and 16 x 1).
TILE_WIDTH_VECTORS = 2
#: Bytes of workspace rows one channel block may occupy: most of a 1 MB L2, so ResNet-sized
#: layers need one block and no partial sums (48-192 KB blocks measured within 5-8%).
BLOCK_BYTES = 768 * 1024
#: Column entries by span (0, 1 or 2 rows from the top tap to the bottom tap of a column).
SPANS = 3
#: The ``taps`` of CPU specs (every tap of a 3x3 kernel).
ALL_TAPS = 9
#: Parallel tasks a conv should offer at least (for thread counts up to this), by splitting
#: its filters into parts when it has fewer row tiles.
MIN_TASKS = 8


@dataclasses.dataclass(frozen=True)
class ConvSpec(SpecMixin):
    """A 3x3 pattern conv: shapes, stride/padding, taps per kept kernel, epilogue."""

    in_channels: int
    out_channels: int
    height: int
    width: int
    stride: int
    padding: int
    #: Taps per kept kernel the CUDA packing reserves. The CPU kernel reads any number, so
    #: CPU specs carry ALL_TAPS: one compiled kernel per shape whatever the layer's patterns.
    taps: int
    target: str
    epilogue: str = "none"  # one of spec.EPILOGUES
    residual: bool = False
    #: The dtype of the input, residual and output (io_dtype.IO_DTYPES); float32 inside.
    dtype: str = "float32"
    op: str = "pattern_conv"

    def __post_init__(self):
        check_io_dtype(self.dtype)

    @property
    def out_height(self) -> int:
        return (self.height + 2 * self.padding - 3) // self.stride + 1

    @property
    def out_width(self) -> int:
        return (self.width + 2 * self.padding - 3) // self.stride + 1

    @property
    def rows_per_vector(self) -> int:
        """Output rows side by side in one vector on CPUs: a map at most half a vector wide (7x7)
        would leave most lanes idle, one row per vector."""
        if self.target_dict["kind"] == "cuda" or self.out_width > LANES // 2:
            return 1
        return LANES // self.out_width

    @property
    def packed_height(self) -> int:
        """Vector rows of the output: output rows, ``rows_per_vector`` to a vector."""
        return -(-self.out_height // self.rows_per_vector)

    @property
    def vector_width(self) -> int:
        """Output width rounded up to whole vectors (the extra lanes are computed, not stored)."""
        return -(-self.out_width // LANES) * LANES

    @property
    def pitch(self) -> int:
        """Row pitch of the workspace: a padded row stored as 3 shifted copies, one per tap column."""
        return 3 * self.vector_width

    def tap_offset(self, dy: int, dx: int) -> int:
        """How the kernel for this spec's target stores tap (dy, dx): on CPUs its offset in the
        padded input plane (from tap (0, 0) of the same output), on CUDA its index dy * 3 + dx."""
        if self.target_dict["kind"] == "cuda":
            return dy * 3 + dx
        return dy * self.pitch + dx * self.vector_width

    @property
    def padded_rows(self) -> int:
        """Workspace rows per input channel. Row a holds padded input row a (rows a, a + s, ...,
        one per lane block, where several output rows share a vector)."""
        return self.stride * self.rows_per_vector * (self.packed_height - 1) + 3

    @property
    def plane(self) -> int:
        """Floats per input channel in the workspace."""
        return self.padded_rows * self.pitch

    @property
    def tile_vectors(self) -> int:
        """Vectors across the width per register tile (a divisor of the rounded width)."""
        vectors = self.vector_width // LANES
        return TILE_WIDTH_VECTORS if vectors % TILE_WIDTH_VECTORS == 0 else 1

    @property
    def tile_width(self) -> int:
        return self.tile_vectors * LANES

    @property
    def column_tiles(self) -> int:
        return self.vector_width // self.tile_width

    @property
    def tile_rows(self) -> int:
        return max(1, min(self.packed_height, TILE_VECTORS // self.tile_vectors))

    @property
    def row_tiles(self) -> int:
        return -(-self.packed_height // self.tile_rows)

    @property
    def channel_block(self) -> int:
        """Input channels per block of the CPU kernel: as many as keep a tile's workspace rows
        in L2."""
        rows = (self.tile_rows - 1) * self.stride * self.rows_per_vector + 3
        return max(1, min(self.in_channels, BLOCK_BYTES // (rows * 3 * self.tile_width * 4)))

    @property
    def channel_blocks(self) -> int:
        return -(-self.in_channels // self.channel_block)

    @property
    def filter_parts(self) -> int:
        """Parts the filters are split into, so that (tiles x parts) >= MIN_TASKS."""
        tiles = self.row_tiles * self.column_tiles
        return max(1, min(self.out_channels, -(-MIN_TASKS // tiles)))


def generate(spec: ConvSpec):
    c_in, c_out, h, w = spec.in_channels, spec.out_channels, spec.height, spec.width
    s, p = spec.stride, spec.padding
    oh, ow, vw, tw = spec.out_height, spec.out_width, spec.vector_width, spec.tile_width
    pitch, rows_p, tr, plane = spec.pitch, spec.padded_rows, spec.tile_rows, spec.plane
    act = epilogue_fn(spec.epilogue)
    dt = spec.dtype
    k = spec.rows_per_vector
    full_tiles, tail_rows = spec.packed_height // tr, spec.packed_height % tr
    block_width = vw if k == 1 else ow  # lanes per output row in a vector
    row_tiles, col_tiles = spec.row_tiles, spec.column_tiles
    blocks, nparts = spec.channel_blocks, spec.filter_parts
    per_part = -(-c_out // nparts)
    tasks_per_image = row_tiles * col_tiles * nparts

    def first_j(dx):
        # The first output column j whose tap column j * s + dx - p is an input column.
        return T.max(0, (p - dx + s - 1) // s)

    def count_j(dx):
        # How many output columns from first_j read input columns (at most a lane block).
        return T.max(0, T.min(block_width, (w + p - dx + s - 1) // s) - first_j(dx))

    @T.macro
    def copy_packed(X, xp, nc):
        # Several output rows to a vector: workspace row a, copy dx, lane block m holds padded
        # row a + m * s; lanes past the blocks are zero.
        for row in range(rows_p):
            for dx in T.unroll(3):
                for m in T.unroll(k):
                    base = nc * plane + row * pitch + dx * vw + m * block_width
                    if row + m * s < p or row + m * s >= p + h:
                        for j in range(block_width):
                            xp[base + j] = T.float32(0)
                    else:
                        for j in range(first_j(dx)):
                            xp[base + j] = T.float32(0)
                        for j in range(count_j(dx)):
                            xp[base + first_j(dx) + j] = widen(X[
                                nc // c_in, nc % c_in, row + m * s - p, (first_j(dx) + j) * s + dx - p], dt)
                        for j in range(block_width - first_j(dx) - count_j(dx)):
                            xp[base + first_j(dx) + count_j(dx) + j] = T.float32(0)
                for j in range(vw - k * block_width):
                    xp[nc * plane + row * pitch + dx * vw + k * block_width + j] = T.float32(0)

    @T.macro
    def copy_padded(X, xp, nc):
        # Each workspace element is written once: zeros in padding rows and columns, else input.
        for row in range(rows_p):
            if row < p or row >= p + h:
                for q in T.vectorized(pitch):
                    xp[nc * plane + row * pitch + q] = T.float32(0)
            else:
                for dx in T.unroll(3):
                    for j in range(first_j(dx)):
                        xp[nc * plane + row * pitch + dx * vw + j] = T.float32(0)
                    for j in range(count_j(dx)):
                        xp[nc * plane + row * pitch + dx * vw + first_j(dx) + j] = widen(X[
                            nc // c_in, nc % c_in, row - p, (first_j(dx) + j) * s + dx - p], dt)
                    for j in range(vw - first_j(dx) - count_j(dx)):
                        xp[nc * plane + row * pitch + dx * vw + first_j(dx) + count_j(dx) + j] = T.float32(0)

    def epilogue(value, residual, n, o, row, col):
        if spec.residual:
            value = value + widen(residual[n, o, row, col], dt)
        return narrow(act(value), dt)

    @T.macro
    def column_entries(xp, offsets, wts, cols, ranges, acc, n, o, g, r0, c0, rows, span):
        # Filter o's tap columns of one span in block g. Tap d of output row i reads workspace
        # row (r0 + i) * s + d from the column's top: LLVM loads a row shared by two taps once.
        # An entry's offset includes its channel's plane (cols is not read).
        seg = g * SPANS + span
        for j in range(ranges[o, seg + 1] - ranges[o, seg]):
            for d in T.unroll(span + 1):
                for i in T.unroll(rows):
                    for v in T.vectorized(tw):
                        acc[i, v] = acc[i, v] + wts[ranges[o, seg] + j, d] * xp[
                            n * c_in * plane + offsets[ranges[o, seg] + j] + ((r0 + i) * s * k + d) * pitch
                            + c0 + v]

    @T.macro
    def store_rows(acc, R, Y, n, o, r0, c0, rows):
        # Whole vectors stored as vectors, a row's ragged end by a loop of its length. Not a
        # per-lane guard: LLVM 22 stores a one-lane masked vector of 16-bit values (bfloat16) as
        # 32 bits, over the next output (a width of 17 clobbered the next filter's first value).
        for i in T.unroll(rows):
            if c0 + tw <= ow:
                for v in T.vectorized(tw):
                    Y[n, o, r0 + i, c0 + v] = epilogue(acc[i, v], R, n, o, r0 + i, c0 + v)
            else:
                for v in range(ow - c0):
                    Y[n, o, r0 + i, c0 + v] = epilogue(acc[i, v], R, n, o, r0 + i, c0 + v)

    @T.macro
    def store_packed(acc, R, Y, n, o, r0, c0, rows):
        # k output rows to a vector: lanes m * ow .. m * ow + ow - 1 are row (r0 + i) * k + m
        # (guarded per row, not per lane: see store_rows).
        for i in T.unroll(rows):
            for m in range(k):
                if (r0 + i) * k + m < oh:
                    for c in range(ow):
                        Y[n, o, (r0 + i) * k + m, c] = epilogue(acc[i, m * ow + c], R, n, o, (r0 + i) * k + m, c)

    store = store_rows if k == 1 else store_packed

    @T.macro
    def filter_block(xp, offsets, wts, cols, ranges, bias, R, Y, partial, n, o, f, g, r0, c0, rows):
        # Filter o's entries in channel block g, added to its partial sums (slot f).
        acc = T.alloc_buffer((rows, tw), "float32", scope="local")
        if blocks == 1:  # a Python constant: folded when the script is parsed
            for i in T.unroll(rows):
                for v in T.vectorized(tw):
                    acc[i, v] = bias[o]
        else:
            for i in T.unroll(rows):
                for v in T.vectorized(tw):
                    acc[i, v] = T.if_then_else(g == 0, bias[o], partial[f, i, v])
        # One call per span (a Python constant here: each loop body is straight-line code).
        column_entries(xp, offsets, wts, cols, ranges, acc, n, o, g, r0, c0, rows, 0)
        column_entries(xp, offsets, wts, cols, ranges, acc, n, o, g, r0, c0, rows, 1)
        column_entries(xp, offsets, wts, cols, ranges, acc, n, o, g, r0, c0, rows, 2)
        if g == blocks - 1:
            store(acc, R, Y, n, o, r0, c0, rows)
        else:
            for i in T.unroll(rows):
                for v in T.vectorized(tw):
                    partial[f, i, v] = acc[i, v]

    @T.macro
    def task(xp, offsets, wts, cols, ranges, bias, R, Y, n, part, r0, c0, rows):
        partial = T.alloc_buffer((per_part if blocks > 1 else 1, rows, tw), "float32")
        for g in range(blocks):
            for f in range(T.min(per_part, c_out - part * per_part)):
                filter_block(xp, offsets, wts, cols, ranges, bias, R, Y, partial, n, part * per_part + f,
                             f, g, r0, c0, rows)

    residual_shape = (1,) if not spec.residual else None

    @T.prim_func
    def kernel(x: T.handle, off: T.handle, wt: T.handle, col: T.handle, ptr: T.handle, bi: T.handle,
               res: T.handle, y: T.handle):
        T.func_attr({"global_symbol": ENTRY, "tirx.noalias": True, "tirx.is_scheduled": True,
                     "sparsepass.kernel": "pattern_conv"})
        N = T.int64()
        NNZ = T.int64()
        X = T.match_buffer(x, (N, c_in, h, w), dt, align=4, offset_factor=1)
        offsets = T.match_buffer(off, (NNZ,), "int32", align=4)
        wts = T.match_buffer(wt, (NNZ, 3), "float32", align=4)
        cols = T.match_buffer(col, (NNZ,), "int32", align=4)
        ranges = T.match_buffer(ptr, (c_out, blocks * SPANS + 1), "int32", align=4)
        bias = T.match_buffer(bi, (c_out,), "float32", align=4)
        R = T.match_buffer(res, residual_shape or (N, c_out, oh, ow), dt if spec.residual else "float32",
                           align=4, offset_factor=1)
        Y = T.match_buffer(y, (N, c_out, oh, ow), dt, align=4, offset_factor=1)
        xp = T.alloc_buffer((N * c_in * plane,), "float32")
        for nc in T.parallel(N * c_in):
            if k == 1:  # a Python constant
                copy_padded(X, xp, nc)
            else:
                copy_packed(X, xp, nc)
        # One parallel loop for whole tiles and the tail tile: each launch wakes the pool (~30 us).
        # Task t: image t // tasks_per_image, then row tile, column tile, filter part.
        for t in T.parallel(N * tasks_per_image):
            if t // (col_tiles * nparts) % row_tiles < full_tiles:
                task(xp, offsets, wts, cols, ranges, bias, R, Y, t // tasks_per_image, t % nparts,
                     t // (col_tiles * nparts) % row_tiles * tr, t // nparts % col_tiles * tw, tr)
            else:
                task(xp, offsets, wts, cols, ranges, bias, R, Y, t // tasks_per_image, t % nparts,
                     full_tiles * tr, t // nparts % col_tiles * tw, tail_rows)

    return kernel
