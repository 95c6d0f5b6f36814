"""Registering sparsepass's kernels as PyTorch operators, at the least cost per call.

``torch.library.custom_op`` wraps every call in Python autograd and dispatch
layers: about 11 us a call, measured here, as much as a small sparse kernel.
The lower-level ``torch.library.Library`` registers the same schema (inferred
from the Python signature, as custom_op does) with the function as the CPU and
CUDA kernel directly (about 3 us), and ``torch.library.register_fake`` gives
torch.export and torch.compile the output shapes. Our ops are inference-only:
there is no autograd formula to register.
"""

from __future__ import annotations

from typing import Callable

import torch

NAMESPACE = "sparsepass"
_LIBRARY = torch.library.Library(NAMESPACE, "DEF")


def kernel_op(name: str, fake: Callable) -> Callable:
    """Decorator: register ``fn`` as ``torch.ops.sparsepass.<name>`` with ``fake`` as its meta kernel.

    Returns the op (an OpOverloadPacket), which calls ``fn`` through the dispatcher.
    """

    def register(fn: Callable):
        _LIBRARY.define(name + torch.library.infer_schema(fn, mutates_args=()))
        for dispatch_key in ("CPU", "CUDA"):
            _LIBRARY.impl(name, fn, dispatch_key)
        torch.library.register_fake(f"{NAMESPACE}::{name}", fake, lib=_LIBRARY)
        return getattr(getattr(torch.ops, NAMESPACE), name)

    return register
