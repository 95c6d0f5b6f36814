"""Pruning that produces the structures sparsepass kernels run fast."""

from sparsepass.prune.projections import block_mask, prune_blocks, prune_linears

__all__ = ["block_mask", "prune_blocks", "prune_linears"]
