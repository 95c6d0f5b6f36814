"""Packing a pattern-pruned 3x3 conv weight into the CSR arrays the pattern conv kernels read."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class PatternWeight:
    """CSR over output filters of the kept 3x3 kernels, each filter's kernels split by channel block.

    offsets : int32 [nnz, taps] how each tap is addressed (the kernel's ``tap_offset(dy, dx)``)
    weights : float32 [nnz, taps] tap weights (0 for padding taps of shorter patterns)
    cols : int32 [nnz] input channel of each kept kernel (increasing within a filter)
    ranges : int32 [out_channels, channel_blocks + 1] the kept kernels of filter o whose input
        channel lies in block g are entries ``ranges[o, g]:ranges[o, g + 1]``
    bias : float32 [out_channels]
    """

    offsets: np.ndarray
    weights: np.ndarray
    cols: np.ndarray
    ranges: np.ndarray
    bias: np.ndarray

    def to_dense(self, in_channels: int, tap_offset) -> np.ndarray:
        """The dense [out, in, 3, 3] weight this stands for (for tests)."""
        where = {tap_offset(dy, dx): (dy, dx) for dy in range(3) for dx in range(3)}
        out = np.zeros((len(self.ranges), in_channels, 3, 3), dtype=np.float32)
        for o in range(len(self.ranges)):
            for e in range(self.ranges[o, 0], self.ranges[o, -1]):
                for off, wt in zip(self.offsets[e], self.weights[e]):
                    if wt != 0:
                        out[o, self.cols[e], where[off][0], where[off][1]] += wt
        return out


def max_taps(weight: np.ndarray) -> int:
    """The most non-zero taps any 3x3 kernel of ``weight`` keeps (at least 1)."""
    return max(1, int((weight.reshape(*weight.shape[:2], 9) != 0).sum(axis=2).max()))


def to_pattern_csr(weight: np.ndarray, tap_offset, taps: int, bias: np.ndarray | None = None,
                   channel_block: int | None = None) -> PatternWeight:
    """Pack a [out, in, 3, 3] float32 weight with at most ``taps`` non-zeros per kernel.

    ``tap_offset(dy, dx)`` gives each tap's address for the kernel (ConvSpec.tap_offset);
    ``channel_block`` is how many input channels the kernel reads per block
    (ConvSpec.channel_block; None: all in one block).
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
    block = channel_block or max(in_channels, 1)
    blocks = -(-in_channels // block)
    per_block = kept.reshape(out_channels, -1)
    per_block = np.pad(per_block, ((0, 0), (0, blocks * block - in_channels)))
    counts = per_block.reshape(out_channels, blocks, block).sum(axis=2)
    ends = np.cumsum(counts.reshape(-1)).reshape(out_channels, blocks)
    ranges = np.concatenate([ends[:, :1] - counts[:, :1], ends], axis=1).astype(np.int32)
    return PatternWeight(offsets, weights, chan.astype(np.int32) if len(chan) else np.zeros(1, np.int32),
                         ranges, np.zeros(out_channels, np.float32) if bias is None
                         else np.asarray(bias, dtype=np.float32))
