"""DenseConv2d: the dense convs a CNN keeps become im2col and our dense matmul kernel.

TVM 0.27 has no CPU conv schedule either: a legalized ``R.nn.conv2d`` left to
dlight's CPU rules ran ResNet-18's 7x7 stem in 141 ms and a 1x1 stride-2
downsample in 2.4 ms on one thread (PyTorch: 5.6 and 0.14 ms), so a sparsified
ResNet-18 built through ``pipeline()`` ran 4.6x slower than PyTorch dense.
This pass rewrites every NCHW/OIHW float32 ``conv2d`` with groups 1 and static
shapes (the ones SparsifyConv2d kept) to

    cols = im2col(x)              # [N, C*kh*kw, OH*OW]: pad, one strided slice per tap
    y = W[Cout, C*kh*kw] @ cols   # R.matmul, then DenseMatmul's kernel
    reshape to [N, Cout, OH, OW]

so the output is NCHW with no transpose, and the matmul's vectors run along the
output positions. 1x1 convs with stride 1 need no im2col. Run it after
SparsifyConv2d and before DenseMatmul; CPU targets only.
"""

from __future__ import annotations

from tvm import ir, relax
from tvm.relax.dpl import is_op, wildcard

from sparsepass.codegen.target import canonical_target, is_cuda
from sparsepass.passes.relax.conv import _conv_attrs, rewrite_functions
from sparsepass.passes.relax.dense_matmul import _static


def _im2col(x: relax.Expr, shape: list[int], kernel: tuple[int, int], attrs: dict,
            out_hw: tuple[int, int]) -> relax.Expr:
    """[N, C, H, W] -> [N, C*kh*kw, OH*OW], taps in OIHW order (c major, then ky, kx)."""
    n, c = shape[:2]
    (kh, kw), (sh, sw), (oh, ow) = kernel, attrs["strides"], out_hw
    top, left, bottom, right = attrs["padding"]
    if (kh, kw, sh, sw) == (1, 1, 1, 1) and not any(attrs["padding"]):
        return relax.op.reshape(x, [n, c, oh * ow])
    padded = x if not any(attrs["padding"]) else \
        relax.op.nn.pad(x, [0, 0, 0, 0, top, bottom, left, right], pad_value=0.0)
    taps = [relax.op.strided_slice(padded, axes=[2, 3], begin=[ky, kx],
                                   end=[ky + (oh - 1) * sh + 1, kx + (ow - 1) * sw + 1],
                                   strides=[sh, sw])
            for ky in range(kh) for kx in range(kw)]
    stacked = taps[0] if len(taps) == 1 else relax.op.stack(taps, axis=2)  # [N, C, taps, OH, OW]
    return relax.op.reshape(stacked, [n, c * kh * kw, oh * ow])


def _rewrite(call: relax.Call, x: relax.Expr, w: relax.Expr) -> relax.Expr | None:
    attrs = _conv_attrs(call)
    if attrs["groups"] != 1 or attrs["dilation"] != [1, 1] or attrs["data_layout"] != "NCHW" \
            or attrs["kernel_layout"] != "OIHW" or str(call.attrs.out_layout) not in ("NCHW", ""):
        return None
    if x.ty.dtype != "float32" or w.ty.dtype != "float32" or call.ty.dtype != "float32":
        return None
    x_shape, w_shape, y_shape = (_static(e.ty.shape.values) for e in (x, w, call))
    if None in (x_shape, w_shape, y_shape):
        return None
    n, cout, oh, ow = y_shape
    cin, kh, kw = w_shape[1:]
    cols = _im2col(x, x_shape, (kh, kw), attrs, (oh, ow))
    weight = relax.op.reshape(w, [1, cout, cin * kh * kw])
    if n > 1:
        weight = relax.op.broadcast_to(weight, [n, cout, cin * kh * kw])
    return relax.op.reshape(relax.op.matmul(weight, cols), [n, cout, oh, ow])


def dense_conv_module(mod: ir.IRModule, target) -> ir.IRModule:
    if is_cuda(canonical_target(target)):
        return mod
    x_pat, w_pat = wildcard(), wildcard()
    pattern = is_op("relax.nn.conv2d")(x_pat, w_pat)

    def rewrite(orig, matches):
        new = _rewrite(orig, matches[x_pat], matches[w_pat])
        return orig if new is None else new

    return rewrite_functions(mod, pattern, rewrite).get()


def DenseConv2d(target=None):  # noqa: N802
    """A Relax module pass: remaining float32 NCHW convs -> im2col + dense matmul (CPUs)."""

    def transform(mod: ir.IRModule, _ctx) -> ir.IRModule:
        return dense_conv_module(mod, target)

    return ir.transform.module_pass(transform, opt_level=1, name="sparsepass.DenseConv2d")
