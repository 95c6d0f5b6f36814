"""Pruning that produces the structures sparsepass kernels run fast.

One-shot projections (`project`, `prune_blocks`, `prune_linears`, `prune_pointwise_convs`,
`pattern_prune`)
and `SparseOptimizer`, which prunes during training; `structure="auto"` lets the
planner choose each layer's structure (optimizer-compiler co-design).
"""

from sparsepass.prune.co_design import explain_choice, structure_choices
from sparsepass.prune.optimizer import CubicSchedule, SparseOptimizer, group_soft_threshold
from sparsepass.prune.patterns import choose_patterns, pattern_prune
from sparsepass.prune.projections import (
           block_mask,
           prune_blocks,
           prune_linears,
           prune_pointwise_convs,
)
from sparsepass.prune.structures import NM, Blocks, Filters, Unstructured, apply_projection, project

__all__ = ["NM", "Blocks", "CubicSchedule", "Filters", "SparseOptimizer", "Unstructured", "apply_projection",
           "block_mask", "choose_patterns", "explain_choice", "group_soft_threshold", "pattern_prune",
           "project", "prune_blocks", "prune_linears", "prune_pointwise_convs", "structure_choices"]
