"""PyTorch custom ops that call sparsepass kernels (registered on import)."""

from sparsepass.ops import conv_ops, pool_ops, torch_ops  # noqa: F401
