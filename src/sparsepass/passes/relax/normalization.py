"""FastNormalizations: last-axis softmax and layer norm become call_tir to our row kernels.

TVM's legalization plus dlight's CPU reduction rule ran BERT's softmax and
layer norms slower than the sparse matmuls around them (codegen.norm_cpu).
Matches float32 ``R.nn.softmax`` over the last axis and ``R.nn.layer_norm``
over the last axis (with scale and center), with a static last dimension.
"""

from __future__ import annotations

import math

from tvm import ir, relax
from tvm.relax.dpl import is_op, rewrite_call, wildcard

from sparsepass.codegen.build import primfunc
from sparsepass.codegen.norm_cpu import NormSpec
from sparsepass.codegen.target import canonical_target, is_cuda
from sparsepass.passes.relax.kernels import add_kernel


def _rows_and_width(x) -> tuple[object, int] | None:
    shape = x.ty.shape.values if x.ty.dtype == "float32" and x.ty.shape is not None else None
    if not shape:
        return None
    try:
        width = int(shape[-1])
    except TypeError:
        return None
    rows = math.prod(shape[:-1]) if len(shape) > 1 else 1
    return rows, width


def _last_axis(axes, ndim: int) -> bool:
    axes = [int(a) for a in axes]
    return axes in ([-1], [ndim - 1])


class _Rewriter:
    def __init__(self, bb, target):
        self.bb, self.target, self.kernels = bb, target, {}
        self.x, self.gamma, self.beta = wildcard(), wildcard(), wildcard()
        self.pattern = (is_op("relax.nn.softmax")(self.x)
                        | is_op("relax.nn.layer_norm")(self.x, self.gamma, self.beta))

    def kernel(self, spec):
        if spec not in self.kernels:
            name = f"sparsepass_{spec.kind}_{spec.n}"
            self.kernels[spec] = add_kernel(self.bb, primfunc(spec), name)
        return self.kernels[spec]

    def __call__(self, orig, matches):
        x = matches[self.x]
        found = _rows_and_width(x)
        if found is None:
            return orig
        rows, width = found
        ndim = len(x.ty.shape.values)
        attrs = orig.attrs
        if orig.op.name == "relax.nn.softmax":
            if not _last_axis([attrs.axis], ndim):
                return orig
            spec, extra = NormSpec.make(kind="softmax", n=width, target=self.target), []
        else:
            if not (_last_axis(attrs.axes, ndim) and attrs.center and attrs.scale):
                return orig
            spec = NormSpec.make(kind="layer_norm", n=width, epsilon=float(attrs.epsilon), target=self.target)
            extra = [matches[self.gamma], matches[self.beta]]
        x2d = relax.op.reshape(x, [rows, width])
        out = relax.call_tir(self.kernel(spec), [x2d, *extra],
                             out_ty=relax.TensorType([rows, width], "float32"))
        return relax.op.reshape(out, orig.ty.shape)


def fast_normalizations_module(mod: ir.IRModule, target) -> ir.IRModule:
    target = canonical_target(target)
    if is_cuda(target):
        return mod
    bb = relax.BlockBuilder(mod)
    rewriter = _Rewriter(bb, target)
    for gvar, func in mod.functions_items():
        if isinstance(func, relax.Function):
            bb.update_func(gvar, rewrite_call(rewriter.pattern, rewriter, func))
    return bb.get()


def FastNormalizations(target=None):  # noqa: N802
    """A Relax module pass: last-axis softmax / layer norm -> sparsepass row kernels."""

    def transform(mod: ir.IRModule, _ctx) -> ir.IRModule:
        return fast_normalizations_module(mod, target)

    return ir.transform.module_pass(transform, opt_level=1, name="sparsepass.FastNormalizations")
