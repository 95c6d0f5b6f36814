"""Compiler passes: analysis and planning (IR-independent) and the IR adapters.

``sparsify_graph`` is the torch.fx entry point; ``sparsepass.passes.relax``
holds the TVM Relax passes.
"""

from sparsepass.passes.fx.compact_channels import compact_channels
from sparsepass.passes.fx.fold_bn import fold_batchnorm
from sparsepass.passes.fx.reorder_filters import reorder_filters
from sparsepass.passes.fx.sparsify import SparsifyOptions, sparsify_graph
from sparsepass.passes.plan import CostModel

__all__ = ["CostModel", "SparsifyOptions", "compact_channels", "fold_batchnorm", "reorder_filters",
           "sparsify_graph"]
