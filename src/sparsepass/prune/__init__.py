"""Pruning that produces the structures sparsepass kernels run fast."""

from sparsepass.prune.patterns import choose_patterns, pattern_prune
from sparsepass.prune.projections import block_mask, prune_blocks, prune_linears

__all__ = ["block_mask", "choose_patterns", "pattern_prune", "prune_blocks", "prune_linears"]
