"""Weight analysis: what is zero in a weight, and in which shape.

`detect` reads a 2-D weight (``out_features x in_features``, the layout of
``nn.Linear``) and returns a frozen `Structure`: the facts the planner needs
to choose a kernel. It never decides anything itself and never touches a graph.

Block shapes are measured on the aligned grid that a BSR kernel would use
(block ``(i, j)`` covers rows ``i*R .. i*R+R`` and columns ``j*C .. j*C+C``,
ragged at the bottom/right edges). For every candidate shape the analysis
records how many stored elements a BSR matrix with that shape would hold, so
the planner can weigh a coarse block with some stored zeros against a fine one.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

#: Block heights and widths tried by `detect` (every pair of them).
BLOCK_SIDES = (1, 2, 4, 8, 16, 32, 64)


@dataclasses.dataclass(frozen=True)
class BlockFit:
    """How well one block shape covers a weight's non-zeros."""

    rows: int
    cols: int
    blocks: int  #: number of blocks holding at least one non-zero
    stored: int  #: elements a BSR matrix of this shape stores (kept blocks' area)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.rows, self.cols)


@dataclasses.dataclass(frozen=True)
class Structure:
    """Frozen facts about the zeros of one 2-D weight.

    Attributes
    ----------
    shape : (out_features, in_features)
    nnz : number of non-zero elements
    block : the coarsest block shape (R, C) whose kept blocks hold non-zeros only
        (so BSR with it stores no zero); (1, 1) when no coarser shape is exact
    fits : every candidate block shape with its kept-block count and stored size
    n_m : (n, m) when every group of m consecutive inputs of a row holds at most
        n non-zeros with n <= m / 2 (e.g. (2, 4)), else None
    zero_rows, zero_cols : indices of all-zero output rows / input columns
    finite : False when the weight holds NaN or Inf
    dtype : the weight's dtype name
    """

    shape: tuple[int, int]
    nnz: int
    block: tuple[int, int]
    fits: tuple[BlockFit, ...]
    n_m: tuple[int, int] | None
    zero_rows: tuple[int, ...]
    zero_cols: tuple[int, ...]
    finite: bool
    dtype: str

    @property
    def size(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def density(self) -> float:
        return self.nnz / self.size if self.size else 1.0

    @property
    def kind(self) -> str:
        """One word: ``empty``, ``dense``, ``block``, ``n:m`` or ``unstructured``."""
        if self.nnz == 0:
            return "empty"
        if self.nnz == self.size:
            return "dense"
        if self.block != (1, 1):
            return "block"
        if self.n_m is not None:
            return "n:m"
        return "unstructured"

    def fit(self, rows: int, cols: int) -> BlockFit:
        """The `BlockFit` of one candidate shape (KeyError if it was not tried)."""
        for f in self.fits:
            if f.shape == (rows, cols):
                return f
        raise KeyError(f"block shape {rows}x{cols} was not analysed")

    def summary(self) -> str:
        """A short human description, e.g. ``block 32x1`` or ``2:4``."""
        kind = self.kind
        if kind == "block":
            return f"block {self.block[0]}x{self.block[1]}"
        if kind == "n:m":
            return f"{self.n_m[0]}:{self.n_m[1]}"
        return kind


def as_array(weight: Any) -> np.ndarray:
    """A weight (numpy array or torch tensor) as a numpy array holding the same zeros: bfloat16,
    which numpy lacks, widened (exactly) to float32."""
    if hasattr(weight, "detach"):  # a torch tensor, without importing torch here
        weight = weight.detach().cpu()
        weight = (weight.float() if str(weight.dtype) == "torch.bfloat16" else weight).numpy()
    return np.asarray(weight)


def dtype_name(weight: Any) -> str:
    """A weight's dtype as torch and TVM both spell it (``float32``, ``bfloat16``, ...)."""
    return str(weight.dtype).removeprefix("torch.")


def _pair_sum(counts: np.ndarray, axis: int) -> np.ndarray:
    """Sum neighbouring pairs along ``axis`` (doubling a block side), padding odd ends."""
    if counts.shape[axis] % 2:
        pad = [(0, 0), (0, 0)]
        pad[axis] = (0, 1)
        counts = np.pad(counts, pad)
    if axis == 0:
        return counts[0::2] + counts[1::2]
    return counts[:, 0::2] + counts[:, 1::2]


def _edge_sizes(length: int, side: int) -> np.ndarray:
    """Sizes of the blocks of one side along a dimension, the last one ragged."""
    sizes = np.full(-(-length // side), side, dtype=np.int64)
    if length % side:
        sizes[-1] = length % side
    return sizes


def _stored(kept: np.ndarray, per_row: np.ndarray, shape: tuple[int, int], r: int, c: int) -> int:
    """Elements held by the kept blocks, counting the ragged edge blocks' true area."""
    rows, cols = shape
    short_last_col = c - _edge_sizes(cols, c)[-1]
    area_per_row = per_row * c - kept[:, -1] * short_last_col
    return int(_edge_sizes(rows, r) @ area_per_row)


def _block_fits(nonzero: np.ndarray) -> tuple[BlockFit, ...]:
    """Kept-block counts and stored sizes for every (R, C) in BLOCK_SIDES^2."""
    rows, cols = nonzero.shape
    fits = []
    by_rows = nonzero.astype(np.int16)  # counts reach at most 64*64 = 4096
    for r in BLOCK_SIDES:
        if r > 1:
            by_rows = _pair_sum(by_rows, axis=0)
        counts = by_rows
        for c in BLOCK_SIDES:
            if c > 1:
                counts = _pair_sum(counts, axis=1)
            kept = counts > 0
            per_row = np.count_nonzero(kept, axis=1)
            fits.append(BlockFit(r, c, int(per_row.sum()), _stored(kept, per_row, nonzero.shape, r, c)))
    return tuple(fits)


def spans_needed(fit: BlockFit, shape: tuple[int, int]) -> bool:
    """Whether each side of the block is needed for a matrix of ``shape``: a side whose half
    already spans the matrix adds only zeros (a one-channel 1x1 conv is no 64x64 block)."""
    return all(side == 1 or side // 2 < length for side, length in zip(fit.shape, shape))


def _coarsest_exact(fits: tuple[BlockFit, ...], nnz: int, shape: tuple[int, int]) -> tuple[int, int]:
    exact = [f for f in fits if f.stored == nnz and spans_needed(f, shape)]
    if nnz == 0 or not exact:
        return (1, 1)
    best = max(exact, key=lambda f: (f.rows * f.cols, f.rows))
    return best.shape


def _n_m(nonzero: np.ndarray) -> tuple[int, int] | None:
    """The tightest n:m (m in 4, 8; n <= m/2) that every row group satisfies, else None."""
    rows, cols = nonzero.shape
    found = []
    for m in (4, 8):
        if cols % m or cols == 0:
            continue
        n = int(nonzero.reshape(rows, cols // m, m).sum(axis=2).max())
        if 0 < n <= m // 2:
            found.append((n / m, m, n))
    if not found:
        return None
    _, m, n = min(found)
    return (n, m)


def detect(weight: Any) -> Structure:
    """Analyse a 2-D weight (numpy array or torch tensor) and return its `Structure`.

    Runs in well under a second on a 4096 x 4096 weight. Raises ValueError for
    anything but a 2-D array.
    """
    w = as_array(weight)
    if w.ndim != 2:
        raise ValueError(f"detect expects a 2-D weight, got shape {tuple(w.shape)}")
    nonzero = w != 0
    nnz = int(nonzero.sum())
    fits = _block_fits(nonzero)
    finite = bool(np.isfinite(w).all()) if np.issubdtype(w.dtype, np.floating) else True
    return Structure(
        shape=(int(w.shape[0]), int(w.shape[1])),
        nnz=nnz,
        block=_coarsest_exact(fits, nnz, nonzero.shape),
        fits=fits,
        n_m=_n_m(nonzero),
        zero_rows=tuple(np.flatnonzero(~nonzero.any(axis=1)).tolist()),
        zero_cols=tuple(np.flatnonzero(~nonzero.any(axis=0)).tolist()),
        finite=finite,
        dtype=dtype_name(weight),
    )
