"""PCONV's one-shot projection: pattern sparsity within 3x3 kernels, connectivity across them.

1. The pattern set: each kernel's strongest ``taps`` positions (the centre
   always included), counted over every 3x3 conv of the model; the
   ``patterns`` most frequent masks form the set, shared by all layers.
2. Each kernel keeps the pattern of the set that retains the most of its L2 norm.
3. Connectivity: in each layer, only the ``round(connectivity * kernels)``
   kernels with the largest retained norm are kept at all.
"""

from __future__ import annotations

import collections

import torch
import torch.nn as nn

CENTRE = 4


def _strongest_mask(kernels: torch.Tensor, taps: int) -> torch.Tensor:
    """[n, 9] bool: the centre plus each kernel's ``taps - 1`` strongest other positions."""
    magnitude = kernels.abs().clone()
    magnitude[:, CENTRE] = float("inf")
    keep = torch.topk(magnitude, taps, dim=1).indices
    return torch.zeros_like(kernels, dtype=torch.bool).scatter_(1, keep, True)


def _pattern_convs(model: nn.Module):
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) and m.groups == 1]


def choose_patterns(model: nn.Module, taps: int, patterns: int) -> torch.Tensor:
    """[patterns, 9] bool: the most frequent strongest-``taps`` masks over the model's 3x3 convs."""
    if not 1 <= taps <= 9:
        raise ValueError(f"taps must be in 1..9, got {taps}")
    counts: collections.Counter = collections.Counter()
    for _, conv in _pattern_convs(model):
        masks = _strongest_mask(conv.weight.detach().reshape(-1, 9), taps)
        counts.update(tuple(row) for row in masks.tolist())
    if not counts:
        raise ValueError("the model has no 3x3 convolution (groups=1) to pattern-prune")
    chosen = [mask for mask, _ in counts.most_common(patterns)]
    return torch.tensor(chosen, dtype=torch.bool)


@torch.no_grad()
def pattern_prune(model: nn.Module, taps: int = 4, patterns: int = 8,
                  connectivity: float = 0.5) -> dict[str, torch.Tensor]:
    """Project every 3x3 conv (groups=1) of ``model`` onto PCONV sparsity, in place.

    Returns the applied masks by module name (bool, the weight's shape).
    """
    if not 0.0 <= connectivity <= 1.0:
        raise ValueError(f"connectivity must be in [0, 1], got {connectivity}")
    table = choose_patterns(model, taps, patterns).double()  # [P, 9]
    masks = {}
    for name, conv in _pattern_convs(model):
        out_c, in_c = conv.weight.shape[:2]
        kernels = conv.weight.reshape(out_c * in_c, 9)
        retained = (kernels.double() ** 2) @ table.T  # [n, P]
        best, which = retained.max(dim=1)
        mask = table[which].bool()
        keep = torch.zeros(out_c * in_c, dtype=torch.bool)
        keep[torch.argsort(best, descending=True, stable=True)[: int(round(connectivity * out_c * in_c))]] = True
        mask &= keep[:, None]
        conv.weight.mul_(mask.reshape(conv.weight.shape).to(conv.weight.dtype))
        masks[name] = mask.reshape(conv.weight.shape)
    return masks
