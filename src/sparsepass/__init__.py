"""sparsepass: compiler passes that turn the zeros of pruned networks into speed.

``passes.sparsify_graph(gm)`` rewrites a torch.fx GraphModule's pruned layers
into generated TVM kernels; ``sparsepass.passes.relax`` does the same on a
Relax IRModule. See README.md.
"""

__version__ = "0.1.0"

from sparsepass.errors import SparsifyError  # noqa: E402

__all__ = ["SparsifyError", "__version__"]
