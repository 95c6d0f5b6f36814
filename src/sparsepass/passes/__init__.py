"""Compiler passes: analysis and planning (IR-independent) and the IR adapters.

``sparsify_graph`` is the torch.fx entry point; ``sparsepass.passes.relax``
holds the TVM Relax passes.
"""

from sparsepass.passes.fx.sparsify import SparsifyOptions, sparsify_graph
from sparsepass.passes.plan import CostModel

__all__ = ["CostModel", "SparsifyOptions", "sparsify_graph"]
