"""Packing a pattern-pruned 3x3 conv weight into the CSR arrays the pattern conv kernels read.

Two packings share one set of arrays (offsets, weights, cols, ranges, bias):
the CUDA kernel reads one entry per kept 3x3 kernel (its taps, to_pattern_csr);
the CPU kernel reads one entry per kept tap column of a kernel (to_column_csr),
so that the taps of one column, which read the same input rows one row apart,
load each row once. `pack` picks the one a spec's kernel reads.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class _Packed:
    """The arrays both packings share; subclasses say which taps an entry stands for."""

    offsets: np.ndarray
    weights: np.ndarray
    cols: np.ndarray
    ranges: np.ndarray
    bias: np.ndarray

    def entry_taps(self, e: int, where: dict):
        """(dy, dx, weight) of each tap entry ``e`` stands for; ``where`` maps offsets to (dy, dx)."""
        raise NotImplementedError

    def to_dense(self, in_channels: int, tap_offset) -> np.ndarray:
        """The dense [out, in, 3, 3] weight this stands for (for tests)."""
        where = {tap_offset(dy, dx): (dy, dx) for dy in range(3) for dx in range(3)}
        out = np.zeros((len(self.ranges), in_channels, 3, 3), dtype=np.float32)
        for o in range(len(self.ranges)):
            for e in range(self.ranges[o, 0], self.ranges[o, -1]):
                for dy, dx, wt in self.entry_taps(e, where):
                    out[o, self.cols[e], dy, dx] += wt
        return out


class PatternWeight(_Packed):
    """CSR over output filters of the kept 3x3 kernels (the CUDA kernel's packing).

    offsets : int32 [nnz, taps] how each tap is addressed (the kernel's ``tap_offset(dy, dx)``)
    weights : float32 [nnz, taps] tap weights (0 for padding taps of shorter patterns)
    cols : int32 [nnz] input channel of each kept kernel (increasing within a filter)
    ranges : int32 [out_channels, 2] filter o's kept kernels are entries ``ranges[o, 0]:ranges[o, 1]``
    bias : float32 [out_channels]
    """

    def entry_taps(self, e: int, where: dict):
        return [(*where[int(off)], wt) for off, wt in zip(self.offsets[e], self.weights[e]) if wt != 0]


def max_taps(weight: np.ndarray) -> int:
    """The most non-zero taps any 3x3 kernel of ``weight`` keeps (at least 1)."""
    return max(1, int((weight.reshape(*weight.shape[:2], 9) != 0).sum(axis=2).max()))


def _ranges(counts: np.ndarray) -> np.ndarray:
    """int32 [rows, segments + 1] CSR bounds from entry counts [rows, segments] stored row by row."""
    ends = np.cumsum(counts.reshape(-1)).reshape(counts.shape)
    return np.concatenate([ends[:, :1] - counts[:, :1], ends], axis=1).astype(np.int32)


def to_pattern_csr(weight: np.ndarray, tap_offset, taps: int, bias: np.ndarray | None = None) -> PatternWeight:
    """Pack a [out, in, 3, 3] float32 weight with at most ``taps`` non-zeros per kernel.

    ``tap_offset(dy, dx)`` gives each tap's address for the kernel (ConvSpec.tap_offset).
    """
    weight = np.asarray(weight, dtype=np.float32)
    out_channels, in_channels = weight.shape[:2]
    flat = weight.reshape(out_channels, in_channels, 9)
    kept = (flat != 0).any(axis=2)
    filt, chan = np.nonzero(kept)  # row-major: filters in order, channels increasing within each
    offsets = np.zeros((max(len(filt), 1), taps), dtype=np.int32)
    weights = np.zeros((max(len(filt), 1), taps), dtype=np.float32)
    for e, (o, c) in enumerate(zip(filt, chan)):
        positions = np.flatnonzero(flat[o, c])
        if len(positions) > taps:
            raise ValueError(f"kernel ({o}, {c}) keeps {len(positions)} taps, more than {taps}")
        offsets[e, : len(positions)] = [tap_offset(int(t) // 3, int(t) % 3) for t in positions]
        weights[e, : len(positions)] = flat[o, c, positions]
    ranges = _ranges(kept.sum(axis=1, keepdims=True))
    return PatternWeight(offsets, weights, chan.astype(np.int32) if len(chan) else np.zeros(1, np.int32),
                         ranges, np.zeros(out_channels, np.float32) if bias is None
                         else np.asarray(bias, dtype=np.float32))


#: Column entries by span (bottom tap row minus top tap row): 0, 1 or 2.
SPANS = 3


@dataclasses.dataclass(frozen=True)
class ColumnWeight(_Packed):
    """CSR over output filters of the kept tap columns of 3x3 kernels, by channel block and span.

    An entry is one column dx of a kept kernel (o, c) with its taps from row ``dy0`` down to
    ``dy0 + span`` (span 0-2; taps in between may be zero).

    offsets : int32 [nnz] the address of the column's top tap in the kernel's input workspace:
        ``c * channel_stride + tap_offset(dy0, dx)`` (one load per entry instead of two)
    weights : float32 [nnz, 3] tap weights of rows dy0, dy0 + 1, dy0 + 2 (0 past the span)
    cols : int32 [nnz] input channel of each entry
    ranges : int32 [out_channels, channel_blocks * SPANS + 1] filter o's entries of channel block
        g and span s are ``ranges[o, g * SPANS + s]:ranges[o, g * SPANS + s + 1]``
    bias : float32 [out_channels]
    """

    channel_stride: int = 0

    def entry_taps(self, e: int, where: dict):
        dy0, dx = where[int(self.offsets[e]) - int(self.cols[e]) * self.channel_stride]
        return [(dy0 + d, dx, self.weights[e, d]) for d in range(3 - dy0)]


def to_column_csr(weight: np.ndarray, tap_offset, bias: np.ndarray | None = None,
                  channel_block: int | None = None, channel_stride: int = 0) -> ColumnWeight:
    """Pack a [out, in, 3, 3] float32 weight as kept tap columns (ColumnWeight).

    ``tap_offset(dy, dx)`` gives a tap's address for the kernel (ConvSpec.tap_offset) and
    ``channel_stride`` the distance between input channels (ConvSpec.plane);
    ``channel_block`` is how many input channels the kernel reads per block (None: all).
    Within a filter, entries go by channel block, then span, then channel, then column.
    """
    weight = np.asarray(weight, dtype=np.float32)
    out_channels, in_channels = weight.shape[:2]
    kept = weight != 0  # [o, c, dy, dx]
    has = kept.any(axis=2)  # [o, c, dx]
    top = np.argmax(kept, axis=2)
    span = 2 - np.argmax(kept[:, :, ::-1], axis=2) - top
    filt, chan, col = np.nonzero(has)
    block = channel_block or max(in_channels, 1)
    blocks = -(-in_channels // block)
    segment = (chan // block) * SPANS + span[filt, chan, col]
    order = np.lexsort((col, chan, segment, filt))
    filt, chan, col, segment = filt[order], chan[order], col[order], segment[order]
    dy0 = top[filt, chan, col]
    rows = np.minimum(dy0[:, None] + np.arange(3), 2)
    weights = weight[filt[:, None], chan[:, None], rows, col[:, None]]
    weights = np.where(np.arange(3) <= span[filt, chan, col][:, None], weights, 0).astype(np.float32)
    offset_of = np.array([[tap_offset(dy, dx) for dx in range(3)] for dy in range(3)], dtype=np.int64)
    offsets = offset_of[dy0, col] + chan.astype(np.int64) * channel_stride
    if len(offsets) and offsets.max() >= 2 ** 31:
        raise ValueError(f"the input workspace ({weight.shape[1]} x {channel_stride} floats) is too large "
                         "for int32 offsets")
    offsets = offsets.astype(np.int32)
    counts = np.zeros((out_channels, blocks * SPANS), dtype=np.int64)
    np.add.at(counts, (filt, segment), 1)
    ranges = _ranges(counts)
    if len(filt) == 0:  # buffers of length 0 are not allowed: one unused entry
        offsets, weights, chan = np.zeros(1, np.int32), np.zeros((1, 3), np.float32), np.zeros(1, np.int64)
    return ColumnWeight(offsets, weights, chan.astype(np.int32), ranges,
                        np.zeros(out_channels, np.float32) if bias is None
                        else np.asarray(bias, dtype=np.float32), channel_stride)


#: The packed arrays in the order the pattern conv kernels take them.
FIELDS = ("offsets", "weights", "cols", "ranges", "bias")


def pack(spec, weight: np.ndarray, bias: np.ndarray | None = None) -> PatternWeight | ColumnWeight:
    """Pack ``weight`` as the kernel for ``spec`` (a ConvSpec) reads it: per kept kernel on
    CUDA, per kept tap column on CPUs."""
    if spec.target_dict["kind"] == "cuda":
        return to_pattern_csr(weight, spec.tap_offset, spec.taps, bias)
    return to_column_csr(weight, spec.tap_offset, bias, spec.channel_block, spec.plane)
