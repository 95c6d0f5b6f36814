"""What every op's call path shares: kernel specs parsed once per string, the dtype check, and
the placeholder tensor passed where a kernel takes no residual.

A rewritten graph stores each kernel's spec as a JSON string argument; parsing it on every
call (and allocating a placeholder) cost microseconds per layer, as much as a small kernel.
"""

from __future__ import annotations

import functools
import json

import torch

from sparsepass.codegen.max_pool_cpu import PoolSpec
from sparsepass.codegen.pattern_conv_cpu import ConvSpec
from sparsepass.codegen.spec import KernelSpec
from sparsepass.errors import SparsifyError


@functools.lru_cache(maxsize=None)
def linear_spec(text: str) -> KernelSpec:
    return KernelSpec.from_json(text)


@functools.lru_cache(maxsize=None)
def conv_spec(text: str) -> ConvSpec:
    return ConvSpec(**json.loads(text))


@functools.lru_cache(maxsize=None)
def pool_spec(text: str) -> PoolSpec:
    fields = json.loads(text)
    return PoolSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})


@functools.lru_cache(maxsize=None)
def device_of(spec) -> str:
    """The torch device type a spec's kernel runs on."""
    return "cuda" if spec.target_dict["kind"] == "cuda" else "cpu"


def check_dtype(tensor: torch.Tensor, spec, layer: str, what: str = "input") -> None:
    """A kernel reads its activations in the dtype it was built for (the layer's weight dtype)."""
    if str(tensor.dtype) != "torch." + spec.dtype:
        raise SparsifyError(layer, f"{what} dtype is {tensor.dtype}; this layer's kernel was built for "
                                   f"torch.{spec.dtype} activations (the dtype of its weight when "
                                   "sparsified): convert the model and inputs alike before sparsify_graph")


@functools.lru_cache(maxsize=None)
def no_residual(device: str) -> torch.Tensor:
    """The placeholder for the residual of kernels without one (never read or written)."""
    return torch.zeros(1, device=device)
