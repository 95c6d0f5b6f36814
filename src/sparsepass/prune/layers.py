"""Which modules sparsepass prunes, and each one's weight the way the kernels see it.

The kernels and every structure here read a weight as [out, in] (convs as
[out, in, kh, kw]). Hugging Face's ``Conv1D`` (GPT-2's attention and MLP
projections) is a linear layer that stores its weight as [in, out] and computes
``x @ W + b``; pruning the transposed view in place keeps its blocks R outputs
by C inputs, as the BSR kernels run them, and sparsify_graph rewrites its
``addmm(b, x, W)``. ``nn.MultiheadAttention`` (PyTorch's own transformers,
torchvision's ViT) projects q, k and v with one packed [3E, E] weight,
``in_proj_weight``; with E a multiple of the block height its blocks never mix
q, k and v rows. (An attention with other key/value sizes keeps three separate
weights and is not pruned here.)
"""

from __future__ import annotations

import torch
import torch.nn as nn


def is_hf_conv1d(module: nn.Module) -> bool:
    """A transformers ``Conv1D`` (recognised by shape, so transformers need not be imported)."""
    weight = getattr(module, "weight", None)
    return (type(module).__name__ == "Conv1D" and isinstance(weight, torch.Tensor) and weight.dim() == 2
            and weight.shape[1] == getattr(module, "nf", None))


def linear_weight(module: nn.Module) -> torch.Tensor | None:
    """The [out, in] weight (a view, for in-place pruning) of a linear layer, else None."""
    if isinstance(module, nn.Linear):
        return module.weight
    if is_hf_conv1d(module):
        return module.weight.t()
    if isinstance(module, nn.MultiheadAttention) and module.in_proj_weight is not None:
        return module.in_proj_weight
    return None


def prunable_weight(module: nn.Module) -> torch.Tensor | None:
    """The weight SparseOptimizer prunes: a linear layer's [out, in], a Conv2d's [out, in, kh, kw]."""
    if isinstance(module, nn.Conv2d):
        return module.weight
    return linear_weight(module)
