"""Which dead channels may leave a sparse layer without breaking the blocks its kernel runs.

Removing output rows that do not make up whole blocks shifts every block below
them: a BERT FFN pruned to 32x1 blocks lost 8% of its rows to compaction (the
inputs the next layer never reads) and was left with no block structure at all,
so its kernel fell from 32x1 "rows" to 4x1 "tokens" (1.25x slower end to end on
a Zen 2). Dead channels that are not whole blocks of the kernel the planner
picks stay (computed, then unread); a layer that stays dense loses any.
"""

from __future__ import annotations

import numpy as np

from sparsepass.codegen.target import canonical_target
from sparsepass.passes.analysis import detect
from sparsepass.passes.plan import choose


def _partial_groups(drop: set[int], unit: int, size: int) -> set[int]:
    """The indices of ``drop`` whose aligned group of ``unit`` is not dropped whole."""
    if unit <= 1:
        return set()
    broken = set()
    for start in {d // unit * unit for d in drop}:
        group = set(range(start, min(start + unit, size)))
        if not group <= drop:
            broken |= group & drop
    return broken


def structure_breaking(matrix: np.ndarray, rows: set[int], cols: set[int],
                       target=None) -> tuple[set[int], set[int], str]:
    """(rows, cols) among those to be removed from the [out, in] ``matrix`` whose removal would
    break the blocks of the kernel the planner picks for it on ``target``, and the blocks'
    name ("" when nothing breaks)."""
    if not rows and not cols:
        return set(), set(), ""
    kernel = choose(detect(matrix), canonical_target(target)).kernel
    if kernel is None:
        return set(), set(), ""
    r, c = kernel.block
    broken_rows, broken_cols = _partial_groups(rows, r, matrix.shape[0]), _partial_groups(cols, c, matrix.shape[1])
    return broken_rows, broken_cols, f"{r}x{c} blocks" if broken_rows or broken_cols else ""
