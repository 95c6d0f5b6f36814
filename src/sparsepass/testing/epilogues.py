"""PyTorch's own function for each kernel epilogue: what fused kernels are checked against."""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: epilogue name (codegen.spec.EPILOGUES) -> the PyTorch function it computes
TORCH_EPILOGUES = {
    "none": lambda y: y,
    "relu": F.relu,
    "relu6": F.relu6,
    "gelu": F.gelu,
    "gelu_tanh": lambda y: F.gelu(y, approximate="tanh"),
    "silu": F.silu,
    "tanh": torch.tanh,
}
