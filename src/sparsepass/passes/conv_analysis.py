"""Conv weight analysis: PCONV patterns and connectivity for 3x3 kernels, blocks for 1x1.

`detect_conv` reads a [out, in/groups, kh, kw] weight and returns a frozen
`ConvStructure`. For 3x3 kernels: the set of distinct non-zero masks (the
patterns), each kernel's pattern id (-1 for a removed kernel), the taps per
pattern, and the fraction of kernels kept (connectivity). For 1x1 kernels the
weight is a matrix, analysed by `analysis.detect`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from sparsepass.passes.analysis import Structure, as_array, detect, dtype_name


@dataclasses.dataclass(frozen=True)
class ConvStructure:
    """Frozen facts about a conv weight's zeros.

    patterns : distinct 9-bit tap masks of the kept 3x3 kernels, most frequent first
    pattern_ids : int16 array [out, in] bytes (pattern index, -1 = removed kernel), as a tuple
        of tuples so the dataclass stays hashable
    matrix : for 1x1 kernels, the Structure of the [out, in] matrix
    """

    shape: tuple[int, ...]
    nnz: int
    kernels_kept: int
    patterns: tuple[int, ...]
    pattern_ids: tuple[tuple[int, ...], ...]
    max_taps: int
    matrix: Structure | None
    finite: bool
    dtype: str

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def density(self) -> float:
        return self.nnz / self.size if self.size else 1.0

    @property
    def connectivity(self) -> float:
        kernels = self.shape[0] * self.shape[1]
        return self.kernels_kept / kernels if kernels else 1.0

    def summary(self) -> str:
        if self.matrix is not None:
            return self.matrix.summary()
        if self.nnz == self.size:
            return "dense"
        return (f"pattern {len(self.patterns)}x{self.max_taps}-tap, "
                f"connectivity {self.connectivity:.2f}")


def _mask_bits(kernels: np.ndarray) -> np.ndarray:
    """9-bit integer per 3x3 kernel: bit t set when tap t (row-major) is non-zero."""
    return (kernels.reshape(*kernels.shape[:2], 9) != 0).astype(np.int64) @ (1 << np.arange(9))


def detect_conv(weight: Any) -> ConvStructure:
    """Analyse a conv weight (numpy array or torch tensor) of shape [out, in/groups, kh, kw]."""
    w = as_array(weight)
    if w.ndim != 4:
        raise ValueError(f"detect_conv expects a 4-D weight, got shape {w.shape}")
    finite = bool(np.isfinite(w).all()) if np.issubdtype(w.dtype, np.floating) else True
    nnz = int((w != 0).sum())
    matrix, patterns, ids, max_taps = None, (), (), 0
    if w.shape[2:] == (1, 1):
        matrix = dataclasses.replace(detect(w[:, :, 0, 0]), dtype=dtype_name(weight))
    kept = (w != 0).reshape(*w.shape[:2], -1).any(axis=2)
    if w.shape[2:] == (3, 3):
        bits = _mask_bits(w)
        values, counts = np.unique(bits[kept], return_counts=True)
        order = values[np.argsort(-counts, kind="stable")]
        index = {int(b): i for i, b in enumerate(order)}
        ids = tuple(tuple(index[int(b)] if b else -1 for b in row) for row in bits)
        patterns = tuple(int(b) for b in order)
        max_taps = max((bin(b).count("1") for b in patterns), default=0)
    return ConvStructure(tuple(int(d) for d in w.shape), nnz, int(kept.sum()), patterns, ids, max_taps,
                         matrix, finite, dtype_name(weight))
