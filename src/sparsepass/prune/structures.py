"""The sparsity structures sparsepass prunes to, as typed values, and their groups.

Every structure partitions a weight into groups that are kept or zeroed
whole: R x C blocks, single weights, whole filters, or (N:M) positions ranked
within each group of M. ``group_norms`` and ``expand`` move between a weight
and its groups; ``project`` keeps exactly the right number of the strongest.
"""

from __future__ import annotations

import dataclasses

import torch


@dataclasses.dataclass(frozen=True)
class Blocks:
    """R x C blocks of a [out, in] weight (ragged at the edges); conv weights use [out, in*kh*kw]."""

    rows: int
    cols: int

    def __str__(self) -> str:
        return f"{self.rows}x{self.cols}"


@dataclasses.dataclass(frozen=True)
class Unstructured:
    def __str__(self) -> str:
        return "unstructured"


@dataclasses.dataclass(frozen=True)
class Filters:
    """Whole output filters / rows."""

    def __str__(self) -> str:
        return "filters"


@dataclasses.dataclass(frozen=True)
class NM:
    """N non-zeros in every M consecutive inputs of a row (density is fixed at N / M)."""

    n: int
    m: int

    def __str__(self) -> str:
        return f"{self.n}:{self.m}"


Structure = Blocks | Unstructured | Filters | NM


def as_matrix(weight: torch.Tensor) -> torch.Tensor:
    """The weight as [out, in * kh * kw]: how every structure here sees a conv."""
    return weight.reshape(weight.shape[0], -1)


def _block_grid(matrix: torch.Tensor, r: int, c: int) -> torch.Tensor:
    n, k = matrix.shape
    rows, cols = -(-n // r), -(-k // c)
    padded = matrix.new_zeros(rows * r, cols * c)
    padded[:n, :k] = matrix
    return padded.reshape(rows, r, cols, c)


def group_norms(weight: torch.Tensor, structure: Structure) -> torch.Tensor:
    """L2 norm of every group (a 2-D grid for blocks, one per row for filters, per weight otherwise).

    Half-precision weights are measured in float32: squares of float16 weights underflow, and
    the reweighting of SparseOptimizer (1 / norm) overflowed float16 to inf, then NaN."""
    matrix = as_matrix(weight)
    if matrix.dtype in (torch.float16, torch.bfloat16):
        matrix = matrix.float()
    if isinstance(structure, Blocks):
        return _block_grid(matrix, structure.rows, structure.cols).pow(2).sum(dim=(1, 3)).sqrt()
    if isinstance(structure, Filters):
        return matrix.norm(dim=1)
    return matrix.abs()


def expand(group_values: torch.Tensor, weight: torch.Tensor, structure: Structure) -> torch.Tensor:
    """Per-group values broadcast back to the weight's shape."""
    matrix = as_matrix(weight)
    if isinstance(structure, Blocks):
        r, c = structure.rows, structure.cols
        full = group_values.repeat_interleave(r, 0).repeat_interleave(c, 1)
        return full[: matrix.shape[0], : matrix.shape[1]].reshape(weight.shape)
    if isinstance(structure, Filters):
        return group_values[:, None].expand_as(matrix).reshape(weight.shape)
    return group_values.reshape(weight.shape)


def keep_count(groups: int, density: float) -> int:
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"density must be in [0, 1], got {density}")
    return int(round(density * groups))


def project(weight: torch.Tensor, structure: Structure, density: float | None = None) -> torch.Tensor:
    """Boolean mask keeping the strongest groups: exactly ``round(density * groups)`` of them
    (for N:M, the strongest N of every M; ``density`` must then be None or N / M)."""
    if isinstance(structure, NM):
        if density is not None and abs(density - structure.n / structure.m) > 1e-9:
            raise ValueError(f"{structure} sparsity has density {structure.n / structure.m}, not {density}")
        matrix = as_matrix(weight)
        if matrix.shape[1] % structure.m:
            raise ValueError(f"{structure}: input size {matrix.shape[1]} is not a multiple of {structure.m}")
        groups = matrix.abs().reshape(matrix.shape[0], -1, structure.m)
        keep = torch.topk(groups, structure.n, dim=2).indices
        mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(2, keep, True)
        return mask.reshape(weight.shape)
    norms = group_norms(weight.detach(), structure)
    flat = norms.flatten()
    keep = torch.zeros(flat.numel(), dtype=torch.bool)
    keep[torch.argsort(flat, descending=True, stable=True)[: keep_count(flat.numel(), density)]] = True
    return expand(keep.reshape(norms.shape), weight, structure).bool()


@torch.no_grad()
def apply_projection(weight: torch.Tensor, structure: Structure, density: float | None = None) -> torch.Tensor:
    """Zero all but the strongest groups of ``weight`` in place; return the mask."""
    mask = project(weight, structure, density)
    weight.mul_(mask.to(weight.dtype))
    return mask
