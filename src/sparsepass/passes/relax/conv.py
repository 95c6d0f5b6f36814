"""Relax passes for convolutions: FoldBatchNorm and SparsifyConv2d.

FoldBatchNorm folds an inference ``R.nn.batch_norm`` after ``R.nn.conv2d``
(constant weight, optional constant bias) into the conv's weight and bias,
with PyTorch's formula (``torch.nn.utils.fusion.fuse_conv_bn_weights``).

SparsifyConv2d matches ``conv2d(x, W)`` with a constant W, an optional bias
add, an optional residual add and an optional ReLU, and rewrites 3x3 PCONV
layers to ``R.call_tir`` of the pattern conv kernel (all of it fused) and
sparse 1x1 layers to the BSR "channels" kernel (bias and ReLU fused), using
the same analysis, planner and generators as the torch.fx path.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from tvm import ir, relax
from tvm.relax.dpl import is_const, is_op, is_tuple_get_item, rewrite_call, wildcard

from sparsepass.codegen.bsr_format import to_bsr
from sparsepass.codegen.build import primfunc
from sparsepass.codegen.pattern_conv_cpu import ConvSpec
from sparsepass.codegen.pattern_format import FIELDS as PACKED_FIELDS
from sparsepass.codegen.pattern_format import pack
from sparsepass.codegen.target import canonical_target
from sparsepass.passes.conv_analysis import detect_conv
from sparsepass.passes.plan import choose_conv
from sparsepass.passes.relax.bindings import site_key
from sparsepass.passes.relax.kernels import add_kernel, drop_uncalled_kernels
from sparsepass.passes.relax.names import constant_names, layer_name, passed_on, with_names
from sparsepass.passes.relax.report import append_report
from sparsepass.passes.report import LayerReport


def _value(expr) -> np.ndarray | None:
    """The numpy value of a constant or of reshape(constant), else None."""
    if isinstance(expr, ir.Constant):
        return expr.value.numpy()
    if isinstance(expr, relax.Call) and getattr(expr.op, "name", None) == "relax.reshape" \
            and isinstance(expr.args[0], ir.Constant):
        return expr.args[0].value.numpy()
    return None


def _conv_attrs(call) -> dict:
    a = call.attrs
    return {"strides": [int(v) for v in a.strides], "padding": [int(v) for v in a.padding],
            "dilation": [int(v) for v in a.dilation], "groups": int(a.groups),
            "data_layout": str(a.data_layout), "kernel_layout": str(a.kernel_layout)}


def rewrite_functions(mod: ir.IRModule, pattern, rewriter) -> relax.BlockBuilder:
    """Apply ``rewrite_call(pattern, rewriter)`` to every Relax function of ``mod``; the builder
    (also set as ``rewriter.bb``, for rewriters that add PrimFuncs) holds the result."""
    bb = relax.BlockBuilder(mod)
    rewriter.bb = bb
    for gvar, func in mod.functions_items():
        if isinstance(func, relax.Function):
            bb.update_func(gvar, rewrite_call(pattern, rewriter, func))
    return bb


class _FoldBN:
    def __init__(self):
        self.folded = []  # (conv weight, folded weight): the folded one keeps the layer's name
        self.x, self.w, self.bias = wildcard(), is_const(), is_const() | is_op("relax.reshape")(is_const(), wildcard())
        self.conv = is_op("relax.nn.conv2d")(self.x, self.w)
        base = is_op("relax.add")(self.conv, self.bias) | self.conv
        self.stats = [is_const() for _ in range(4)]
        self.bn = is_op("relax.nn.batch_norm")(base, *self.stats)
        self.pattern = is_tuple_get_item(self.bn, 0)

    def __call__(self, orig, matches):
        conv, bn = matches[self.conv], matches[self.bn]
        attrs = _conv_attrs(conv)
        if attrs["data_layout"] != "NCHW" or attrs["kernel_layout"] != "OIHW" or int(bn.attrs.axis) != 1:
            return orig
        weight = torch.from_numpy(_value(matches[self.w]))
        bias = _value(matches[self.bias]) if self.bias in matches else None
        gamma, beta, mean, var = (torch.from_numpy(_value(matches[s])) for s in self.stats)
        from torch.nn.utils.fusion import fuse_conv_bn_weights

        new_w, new_b = fuse_conv_bn_weights(weight, None if bias is None else torch.from_numpy(bias).reshape(-1),
                                            mean, var, float(bn.attrs.epsilon), gamma, beta)
        self.folded.append((weight.numpy(), new_w.detach().numpy()))
        out = relax.op.nn.conv2d(matches[self.x], relax.const(new_w.detach().numpy()),
                                 strides=attrs["strides"], padding=attrs["padding"],
                                 dilation=attrs["dilation"], groups=attrs["groups"])
        return relax.op.add(out, relax.const(new_b.detach().numpy().reshape(1, -1, 1, 1)))


def FoldBatchNorm():  # noqa: N802
    """A Relax module pass: inference batch_norm after a constant-weight conv2d, folded into it."""

    def transform(mod, _ctx):
        folder = _FoldBN()
        folded = rewrite_functions(mod, folder.pattern, folder).get()
        return with_names(folded, passed_on(constant_names(mod), folder.folded))

    return ir.transform.module_pass(transform, opt_level=1, name="sparsepass.FoldBatchNorm")


class _SparsifyConv:
    def __init__(self, target: dict, names: dict):
        self.target, self.kernels, self.layers, self.replacements = target, {}, {}, {}
        self.names = names
        self.x, self.w, self.r = wildcard(), is_const(), wildcard()
        self.b = is_const() | is_op("relax.reshape")(is_const(), wildcard())
        self.conv = is_op("relax.nn.conv2d")(self.x, self.w)
        self.biased = is_op("relax.add")(self.conv, self.b) | is_op("relax.add")(self.b, self.conv)
        base = self.biased | self.conv
        self.res = is_op("relax.add")(base, self.r) | is_op("relax.add")(self.r, base)
        self.pattern = is_op("relax.nn.relu")(self.res) | is_op("relax.nn.relu")(base) | self.res | base

    def kernel(self, spec):
        if spec not in self.kernels:
            kind = "pconv" if isinstance(spec, ConvSpec) else "conv1x1"
            name = f"sparsepass_{kind}_{abs(hash(spec)) % 10**8}"
            self.kernels[spec] = add_kernel(self.bb, primfunc(spec), name)
        return self.kernels[spec]

    def __call__(self, orig, matches):
        # rewrite_call may offer a match again (after rebuilding calls): same answer each time.
        key = site_key(orig, matches, (self.w, self.b, self.x, self.r))
        if key not in self.replacements:
            self.replacements[key] = self.replace(orig, matches)
        return self.replacements[key]

    def name(self, weight: np.ndarray) -> str:
        return layer_name(self.names, weight, f"conv{len(self.layers)}")

    def replace(self, orig, matches):
        conv = matches[self.conv]
        x, out_shape = matches[self.x], conv.ty.shape
        # One report entry per weight: rewrite_call offers a conv it left dense again (as the conv
        # alone, with its bias add, with a new input), which must not repeat the entry.
        key = matches[self.w]
        attrs = _conv_attrs(conv)
        bias = _value(matches[self.b]) if self.b in matches else None
        residual = matches.get(self.r)
        if residual is not None and _value(residual) is not None and bias is None:
            bias, residual = _value(residual), None  # the "residual" was the bias add
        if residual is not None and not _same_shape(residual, conv):
            return orig
        epilogue = "relu" if getattr(orig.op, "name", "") == "relax.nn.relu" else "none"
        weight = _value(matches[self.w])
        structure = detect_conv(weight)
        try:
            shape = [int(d) for d in x.ty.shape.values]
        except TypeError:
            return orig
        params = {"stride": tuple(attrs["strides"]), "padding": tuple(attrs["padding"][:2]),
                  "dilation": tuple(attrs["dilation"]), "groups": attrs["groups"], "batch": shape[0],
                  "height": shape[2], "width": shape[3]}
        if attrs["data_layout"] != "NCHW" or attrs["padding"][:2] != attrs["padding"][2:]:
            return orig
        decision = choose_conv(structure, params, self.target)
        is_pattern = isinstance(decision.kernel, ConvSpec)
        if residual is not None and decision.kernel is not None and not is_pattern:
            return orig  # the 1x1 kernel fuses no residual: let the visit of the conv itself decide
        if decision.kernel is None:
            if key not in self.layers:
                self.layers[key] = LayerReport(self.name(weight), "relax.nn.conv2d", structure.shape,
                                               structure.summary(), structure.density, "dense", decision.reason)
            return orig
        bias_vector = None if bias is None else bias.reshape(-1)
        spec = dataclasses.replace(decision.kernel, epilogue=epilogue,
                                   **({"residual": residual is not None} if is_pattern else {}))
        label = ("pattern conv" if is_pattern else f"bsr {spec.block[0]}x{spec.block[1]} channels") + \
            (" +residual" if residual is not None else "") + ("" if epilogue == "none" else " +relu")
        if key not in self.layers or self.layers[key].kernel == "dense":  # the first (outermost) match
            self.layers[key] = LayerReport(self.name(weight), "relax.nn.conv2d", structure.shape,
                                           structure.summary(), structure.density, label, decision.reason,
                                           decision.estimated_speedup)
        out_ty = relax.TensorType(out_shape, "float32")
        if is_pattern:
            packed = pack(spec, weight, bias_vector)
            arrays = [relax.const(getattr(packed, f)) for f in PACKED_FIELDS]
            extra = residual if residual is not None else relax.const(np.zeros(1, np.float32))
            return relax.call_tir(self.kernel(spec), [x, *arrays, extra], out_ty=out_ty)
        packed = to_bsr(weight[:, :, 0, 0], spec.block, spec.parts, bias_vector)
        arrays = [relax.const(getattr(packed, f)) for f in ("data", "indices", "indptr", "parts", "bias")]
        arrays.append(relax.const(np.zeros(1, np.float32)))  # no residual
        n, c, h, w = shape
        flat = relax.op.reshape(x, [n, c, h * w])
        out = relax.call_tir(self.kernel(spec), [flat, *arrays],
                             out_ty=relax.TensorType([n, spec.out_features, h * w], "float32"))
        return relax.op.reshape(out, out_shape)


def _same_shape(expr, conv) -> bool:
    try:
        return [int(d) for d in expr.ty.shape.values] == [int(d) for d in conv.ty.shape.values]
    except (TypeError, AttributeError):
        return False


def SparsifyConv2d(target=None):  # noqa: N802
    """A Relax module pass: PCONV 3x3 and sparse 1x1 conv2d layers -> sparsepass kernels."""

    def transform(mod, _ctx):
        rewriter = _SparsifyConv(canonical_target(target), constant_names(mod))
        bb = rewrite_functions(mod, rewriter.pattern, rewriter)
        return append_report(drop_uncalled_kernels(bb.get()), list(rewriter.layers.values()))

    return ir.transform.module_pass(transform, opt_level=1, name="sparsepass.SparsifyConv2d")
