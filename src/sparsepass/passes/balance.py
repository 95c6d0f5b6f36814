"""Balanced filter orders: contiguous shares (halves, quarters, ...) of equal work (PCONV reorder)."""

from __future__ import annotations

import numpy as np
import torch

from sparsepass.passes.analysis import detect


def bisect(filters: list[int], work: list[float]) -> list[int]:
    """Order ``filters`` so each half (recursively) has half the filters and about half the work."""
    if len(filters) <= 1:
        return filters
    room = [len(filters) // 2, len(filters) - len(filters) // 2]
    halves: list[list[int]] = [[], []]
    loads = [0.0, 0.0]
    for f in sorted(filters, key=lambda f: -work[f]):  # largest first into the lighter half with room
        side = 0 if (loads[0] <= loads[1] and len(halves[0]) < room[0]) or len(halves[1]) == room[1] else 1
        halves[side].append(f)
        loads[side] += work[f]
    return bisect(halves[0], work) + bisect(halves[1], work)


def balanced_order(work: torch.Tensor) -> torch.Tensor:
    """A filter order whose contiguous halves, quarters, ... carry about equal work."""
    return torch.tensor(bisect(list(range(len(work))), work.tolist()))


def imbalance(work: torch.Tensor) -> float:
    """The heavier half's share of the work (0.5 = balanced)."""
    half = len(work) // 2
    total = float(work.sum()) or 1.0
    return max(float(work[:half].sum()), float(work[half:].sum())) / total


def keeps_blocks(matrices: list[tuple[np.ndarray, int]], perm) -> bool:
    """Whether permuting each [out, in] matrix along its axis (0: its filters, 1: its input
    channels) by ``perm`` leaves the block shape detect() finds in it as it was: the BSR kernels
    of a 1x1 conv or linear run its blocks, and a balanced order ignores them (a ResNet-50's
    4x1 blocks became 1x1 blocks, 1.4x slower)."""
    order = np.asarray(perm)
    return all(detect(np.take(matrix, order, axis=axis)).block == detect(matrix).block
               for matrix, axis in matrices)
