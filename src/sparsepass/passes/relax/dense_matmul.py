"""DenseMatmul: the dense matmuls a model keeps become call_tir to our CPU matmul kernel.

TVM 0.27 has no CPU matmul schedule, so a legalized ``R.matmul`` would run
unscheduled, ~200x slower than PyTorch: attention's Q K^T and P V, and the
linear layers SparsifyLinear kept dense. This pass gives every float32
``R.matmul`` with static K and N and equal leading dims (or a 2-D right
operand, e.g. a folded constant weight) our dense kernel. Run it after
SparsifyLinear (which owns pruned weights) and FoldConstant (which turns
``permute_dims(W)`` into a plain constant).
"""

from __future__ import annotations

import math

from tvm import ir, relax
from tvm.relax.dpl import is_op, rewrite_call, wildcard

from sparsepass.codegen.build import primfunc
from sparsepass.codegen.dense_matmul_cpu import MatmulSpec
from sparsepass.codegen.target import canonical_target, is_cuda
from sparsepass.codegen.tvm_api import structural_equal
from sparsepass.passes.relax.kernels import add_kernel


def _static(dims) -> list[int] | None:
    try:
        return [int(d) for d in dims]
    except TypeError:
        return None


def _plan(a, b) -> tuple[list, int, int, bool] | None:
    """(leading dims, K, N, B shared) when the kernel applies, else None."""
    if a.ty.dtype != "float32" or b.ty.dtype != "float32":
        return None
    a_shape, b_shape = a.ty.shape.values, b.ty.shape.values
    if len(a_shape) < 2 or len(b_shape) < 2:
        return None
    k_n = _static(b_shape[-2:])
    if k_n is None or _static(a_shape[-1:]) != k_n[:1]:
        return None
    lead = list(a_shape[:-2])
    shared = len(b_shape) == 2
    if not shared and (len(b_shape) != len(a_shape)
                       or any(not structural_equal(x, y) for x, y in zip(b_shape[:-2], lead))):
        return None
    return lead, k_n[0], k_n[1], shared


def dense_matmul_module(mod: ir.IRModule, target) -> ir.IRModule:
    target = canonical_target(target)
    if is_cuda(target):
        return mod
    bb = relax.BlockBuilder(mod)
    kernels: dict = {}
    a_pat, b_pat = wildcard(), wildcard()
    pattern = is_op("relax.matmul")(a_pat, b_pat)

    def rewrite(orig, matches):
        a, b = matches[a_pat], matches[b_pat]
        plan = _plan(a, b)
        if plan is None:
            return orig
        lead, k, n, shared = plan
        spec = MatmulSpec.make(k=k, n=n, shared_b=shared, target=target)
        if spec not in kernels:
            name = f"sparsepass_matmul_{k}x{n}" + ("_shared" if shared else "")
            kernels[spec] = add_kernel(bb, primfunc(spec), name)
        batch = math.prod(lead) if lead else 1
        m = a.ty.shape.values[-2]
        a3 = relax.op.reshape(a, [batch, m, k])
        b3 = b if shared else relax.op.reshape(b, [batch, k, n])
        out = relax.call_tir(kernels[spec], [a3, b3], out_ty=relax.TensorType([batch, m, n], "float32"))
        return relax.op.reshape(out, orig.ty.shape)

    for gvar, func in mod.functions_items():
        if isinstance(func, relax.Function):
            bb.update_func(gvar, rewrite_call(pattern, rewrite, func))
    return bb.get()


def DenseMatmul(target=None):  # noqa: N802
    """A Relax module pass: remaining float32 matmuls -> sparsepass's dense CPU kernel."""

    def transform(mod: ir.IRModule, _ctx) -> ir.IRModule:
        return dense_matmul_module(mod, target)

    return ir.transform.module_pass(transform, opt_level=1, name="sparsepass.DenseMatmul")
