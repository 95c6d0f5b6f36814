"""``torch.ops.sparsepass.bsr_linear``: a generated BSR kernel as a PyTorch custom op.

Registered through torch.library with a fake (meta) kernel (see registry), so
a graph that calls it still runs under torch.fx, ``torch.export`` and
``torch.compile``. The kernel is found from its spec string, which the graph
stores as a constant argument: a saved or exported graph rebuilds (or loads
from the disk cache) the same kernel in a fresh process. Tensors cross into
TVM through DLPack without a copy.
"""

from __future__ import annotations

from typing import Optional

import torch

from sparsepass.codegen import runtime
from sparsepass.codegen.build import get_kernel
from sparsepass.codegen.spec import KernelSpec
from sparsepass.errors import SparsifyError
from sparsepass.ops.registry import kernel_op
from sparsepass.ops.specs import check_dtype, device_of, linear_spec, no_residual


def _check_input(x: torch.Tensor, spec: KernelSpec, layer: str) -> None:
    check_dtype(x, spec, layer)
    device = device_of(spec)
    if x.device.type != device:
        raise SparsifyError(layer, f"input is on {x.device}; this kernel was built for {device} "
                            f"(sparsify_graph's target); move the module and inputs there")
    if x.dim() == 0 or x.shape[-1] != spec.in_features:
        raise SparsifyError(
            layer,
            f"input of shape {tuple(x.shape)} does not match in_features={spec.in_features} "
            "(the last dimension must equal in_features)",
        )


def _bsr_linear_fake(x, data, indices, indptr, parts, bias, residual, spec, layer):
    return x.new_empty((*x.shape[:-1], linear_spec(spec).out_features))


@kernel_op("bsr_linear", _bsr_linear_fake)
def bsr_linear(
    x: torch.Tensor,
    data: torch.Tensor,
    indices: torch.Tensor,
    indptr: torch.Tensor,
    parts: torch.Tensor,
    bias: torch.Tensor,
    residual: Optional[torch.Tensor],
    spec: str,
    layer: str,
) -> torch.Tensor:
    """``epilogue(x @ W.T + bias [+ residual])`` with W in sparsepass BSR layout (codegen.bsr_format)."""
    kernel_spec = linear_spec(spec)
    _check_input(x, kernel_spec, layer)
    rows = x.reshape(-1, kernel_spec.in_features).contiguous()
    out = torch.empty(rows.shape[0], kernel_spec.out_features, dtype=x.dtype, device=x.device)
    res = no_residual(x.device.type)
    if kernel_spec.residual:
        if residual is None or tuple(residual.shape) != (*x.shape[:-1], kernel_spec.out_features):
            raise SparsifyError(layer, "the fused residual must have the layer output's shape")
        check_dtype(residual, kernel_spec, layer, "residual")
        res = residual.reshape(rows.shape[0], kernel_spec.out_features).contiguous()
    if rows.shape[0]:
        if x.device.type == "cpu":
            runtime.set_num_threads(torch.get_num_threads())
        get_kernel(kernel_spec)(rows, data, indices, indptr, parts, bias, res, out)
    return out.reshape(*x.shape[:-1], kernel_spec.out_features)
