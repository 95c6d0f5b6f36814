"""One-shot projections: keep the strongest groups of a weight, zero the rest.

Each projection returns the boolean mask it applied. Densities are exact: a
projection to density d of G groups keeps ``round(d * G)`` whole groups (the
groups with the largest L2 norm, ties broken by position), so the kept
fraction of weights is d up to the ragged edge groups.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from sparsepass.prune.layers import linear_weight


def _keep_count(groups: int, density: float) -> int:
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"density must be in [0, 1], got {density}")
    return int(round(density * groups))


def block_mask(weight: torch.Tensor, block: tuple[int, int], density: float) -> torch.Tensor:
    """Mask keeping the ``density`` fraction of R x C blocks of ``weight`` with the largest norm."""
    r, c = block
    n, k = weight.shape
    rows, cols = -(-n // r), -(-k // c)
    padded = torch.zeros(rows * r, cols * c, dtype=torch.float64)
    padded[:n, :k] = weight.detach().double()
    norms = padded.reshape(rows, r, cols, c).pow(2).sum(dim=(1, 3)).flatten()
    keep = torch.zeros(rows * cols, dtype=torch.bool)
    keep[torch.argsort(norms, descending=True, stable=True)[: _keep_count(rows * cols, density)]] = True
    grid = keep.reshape(rows, cols)
    return grid.repeat_interleave(r, 0).repeat_interleave(c, 1)[:n, :k]


@torch.no_grad()
def prune_blocks(weight: torch.Tensor, block: tuple[int, int], density: float) -> torch.Tensor:
    """Zero all but the strongest ``density`` of blocks of ``weight`` in place; return the mask."""
    mask = block_mask(weight, block, density)
    weight.mul_(mask.to(weight.dtype))
    return mask


def prune_linears(model: nn.Module, block: tuple[int, int], density: float,
                  skip: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Block-prune every linear layer of ``model`` (nn.Linear, and Hugging Face's Conv1D as its
    [out, in] transpose), except names in ``skip``; return the masks, [out, in]."""
    weights = {name: linear_weight(module) for name, module in model.named_modules() if name not in skip}
    return {name: prune_blocks(weight, block, density) for name, weight in weights.items() if weight is not None}


def prune_pointwise_convs(model: nn.Module, block: tuple[int, int], density: float,
                          skip: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Block-prune every 1x1 conv of ``model`` (ungrouped; its weight read as [out, in], as the
    BSR "channels" kernel runs it), except names in ``skip``; return the masks, [out, in]."""
    convs = {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d) and name not in skip
             and m.kernel_size == (1, 1) and m.groups == 1}
    return {name: prune_blocks(conv.weight.data.view(conv.out_channels, conv.in_channels), block, density)
            for name, conv in convs.items()}
