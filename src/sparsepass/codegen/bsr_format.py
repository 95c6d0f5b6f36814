"""Packing a dense weight into the BSR arrays our kernels read.

The layout is ours, chosen for the kernels rather than for interchange: each
kept R x C block is stored transposed (``data[b, c, r]``) so that a block's R
rows are contiguous and load as one vector. Block rows are also split into
``parts`` of about equal work, so that a parallel loop over parts is balanced
however unevenly the non-zeros fall.
"""

from __future__ import annotations

import dataclasses

import numpy as np

#: Work of one block row beyond its blocks (bias load and output store),
#: in units of one block's multiply-adds. Used only to balance parts.
ROW_OVERHEAD_BLOCKS = 2.0

#: The arrays a BSR kernel takes, in its argument order.
BSR_FIELDS = ("data", "indices", "indptr", "parts", "bias")



@dataclasses.dataclass(frozen=True)
class BsrWeight:
    """A weight in our BSR layout, plus the bias padded to whole block rows.

    data : float32 [nnzb, C, R] kept blocks, each transposed
    indices : int32 [nnzb] block column of each kept block
    indptr : int32 [block_rows + 1] kept blocks of block row i are indptr[i]:indptr[i+1]
    parts : int32 [P + 1] block-row boundaries of P parts of about equal work
    bias : float32 [block_rows * R] the bias (zeros when the layer has none)
    """

    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray
    parts: np.ndarray
    bias: np.ndarray
    shape: tuple[int, int]
    block: tuple[int, int]

    @property
    def nnzb(self) -> int:
        """Number of kept blocks (the arrays hold one dummy block when it is 0)."""
        return int(self.indptr[-1])

    def to_dense(self) -> np.ndarray:
        """The dense weight this BSR matrix stands for (for tests and debugging)."""
        r, c = self.block
        n, k = self.shape
        rows = len(self.indptr) - 1
        cols = -(-k // c)
        dense = np.zeros((rows, r, cols, c), dtype=self.data.dtype)
        for i in range(rows):
            for b in range(self.indptr[i], self.indptr[i + 1]):
                dense[i, :, self.indices[b], :] = self.data[b].T
        return dense.reshape(rows * r, cols * c)[:n, :k]


def balanced_parts(blocks_per_row: np.ndarray, count: int) -> np.ndarray:
    """Split block rows into ``count`` contiguous parts of about equal work.

    Returns ``count + 1`` non-decreasing int32 boundaries from 0 to the number
    of block rows; a part may be empty when one block row outweighs a share.
    """
    rows = len(blocks_per_row)
    work = np.cumsum(blocks_per_row + ROW_OVERHEAD_BLOCKS)
    targets = work[-1] * np.arange(1, count) / count if rows else np.zeros(count - 1)
    cuts = np.minimum(np.searchsorted(work, targets, side="left") + 1, rows)
    return np.concatenate([[0], cuts, [rows]]).astype(np.int32)


def to_bsr(
    weight: np.ndarray, block: tuple[int, int], parts: int, bias: np.ndarray | None = None
) -> BsrWeight:
    """Pack a dense float32 weight [N, K] (and an optional bias [N]) into `BsrWeight`.

    ``parts`` is the number of balanced parts the kernel expects (KernelSpec.parts).
    """
    weight = np.asarray(weight, dtype=np.float32)
    n, k = weight.shape
    r, c = block
    rows, cols = -(-n // r), -(-k // c)
    padded = np.zeros((rows * r, cols * c), dtype=np.float32)
    padded[:n, :k] = weight
    tiles = padded.reshape(rows, r, cols, c).transpose(0, 2, 3, 1)  # [rows, cols, C, R]
    kept = tiles.any(axis=(2, 3))
    row_idx, col_idx = np.nonzero(kept)
    data = np.ascontiguousarray(tiles[row_idx, col_idx])
    indices = col_idx.astype(np.int32)
    if len(indices) == 0:  # zero-size buffers are not valid kernel arguments
        data = np.zeros((1, c, r), dtype=np.float32)
        indices = np.zeros(1, dtype=np.int32)
    per_row = kept.sum(axis=1)
    indptr = np.concatenate([[0], np.cumsum(per_row)]).astype(np.int32)
    padded_bias = np.zeros(rows * r, dtype=np.float32)
    if bias is not None:
        padded_bias[:n] = np.asarray(bias, dtype=np.float32)
    return BsrWeight(
        data=data,
        indices=indices,
        indptr=indptr,
        parts=balanced_parts(per_row, parts),
        bias=padded_bias,
        shape=(n, k),
        block=(r, c),
    )


def bfloat16_bits(values: np.ndarray) -> np.ndarray:
    """float32 values rounded to bfloat16 (to nearest, ties to even), as int16 bit patterns."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16).view(np.int16)


def amx_tiles(bsr: BsrWeight) -> np.ndarray:
    """The kept blocks (R x C) as AMX weight tiles: int16 [nnzb, R/16, C/2, 32] of bfloat16 bits,
    tile o's row p holding outputs o*16..o*16+15 each as the pair of columns (2p, 2p+1), the
    pair-interleaved layout TDPBF16PS reads its second operand in."""
    r, c = bsr.block
    blocks = bsr.data.reshape(-1, c // 2, 2, r // 16, 16)  # data[b, col, row] -> [b, p, h, o, j]
    return bfloat16_bits(blocks.transpose(0, 3, 1, 4, 2).reshape(-1, r // 16, c // 2, 2 * 16))


def pack_for(layout: str, weight: np.ndarray, block: tuple[int, int], parts: int,
             bias: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The arrays (BSR_FIELDS) a kernel of ``layout`` takes for this weight and bias."""
    bsr = to_bsr(weight, block, parts, bias)
    arrays = {field: getattr(bsr, field) for field in BSR_FIELDS}
    if layout == "amx":
        arrays["data"] = amx_tiles(bsr)
    return arrays
