"""PyTorch custom ops that call sparsepass kernels (registered on import)."""

from sparsepass.ops import torch_ops  # noqa: F401
