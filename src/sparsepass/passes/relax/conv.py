"""Relax passes for convolutions: FoldBatchNorm and SparsifyConv2d.

FoldBatchNorm folds an inference ``R.nn.batch_norm`` after ``R.nn.conv2d``
(constant weight, optional constant bias) into the conv's weight and bias,
with PyTorch's formula (``torch.nn.utils.fusion.fuse_conv_bn_weights``).

SparsifyConv2d matches ``conv2d(x, W)`` with a constant W, an optional bias
add, an optional residual add and an optional activation (activations.py), and
rewrites 3x3 PCONV layers to ``R.call_tir`` of the pattern conv kernel and
sparse 1x1 layers to the BSR "channels" kernel, all of it fused, using
the same analysis, planner and generators as the torch.fx path. Like
SparsifyLinear it decides on the original function (outermost matches whose
folded values have no other use, `sites.py`) and reports each site once.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import torch
from tvm import ir, relax
from tvm.relax.dpl import is_const, is_op, is_tuple_get_item, rewrite_call, wildcard

from sparsepass.codegen.bsr_format import BSR_FIELDS, to_bsr
from sparsepass.codegen.build import primfunc
from sparsepass.codegen.pattern_conv_cpu import ConvSpec
from sparsepass.codegen.pattern_format import FIELDS as PACKED_FIELDS
from sparsepass.codegen.pattern_format import pack
from sparsepass.codegen.target import canonical_target
from sparsepass.passes.conv_analysis import detect_conv
from sparsepass.passes.plan import Decision, choose_conv
from sparsepass.passes.relax.activations import activation_of, epilogue_of
from sparsepass.passes.relax.kernels import RELAX_FLOAT32_ONLY, add_kernel
from sparsepass.passes.relax.names import constant_names, layer_name, passed_on, with_names
from sparsepass.passes.relax.report import append_report
from sparsepass.passes.relax.sites import outermost_matches, rewrite_sites
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


class _ConvPattern:
    """The dpl pattern of one conv layer with its epilogue, with handles on its parts."""

    def __init__(self):
        self.x, self.w, self.r = wildcard(), is_const(), wildcard()
        self.b = is_const() | is_op("relax.reshape")(is_const(), wildcard())
        self.conv = is_op("relax.nn.conv2d")(self.x, self.w)
        self.biased = is_op("relax.add")(self.conv, self.b) | is_op("relax.add")(self.b, self.conv)
        base = self.biased | self.conv
        self.res = is_op("relax.add")(base, self.r) | is_op("relax.add")(self.r, base)
        self.root = activation_of(self.res) | activation_of(base) | self.res | base
        #: sub-patterns whose matches are part of the layer (not operands such as x or r)
        self.parts = (self.conv, self.biased, self.res)
        self.operands = (self.x, self.r)


@dataclasses.dataclass
class _Site:
    """What one match would run: the planner's decision and the epilogue it folds in."""

    weight: np.ndarray
    structure: object
    decision: Decision
    bias: np.ndarray | None
    bias_expr: relax.Expr | None  # the constant added (maybe reshaped), whose shape says how it broadcasts
    residual: relax.Expr | None
    epilogue: str

    @property
    def is_pattern(self) -> bool:
        return isinstance(self.decision.kernel, ConvSpec)


class _SparsifyConv:
    """Rewrites the conv sites of one module's functions; adds kernels through ``bb``."""

    def __init__(self, bb: relax.BlockBuilder, target: dict, names: dict):
        self.bb, self.target, self.names = bb, target, names
        self.kernels, self.layers, self.sites = {}, [], {}
        self.pattern = _ConvPattern()

    def kernel(self, spec):
        if spec not in self.kernels:
            kind = "pconv" if isinstance(spec, ConvSpec) else "conv1x1"
            name = f"sparsepass_{kind}_{abs(hash(spec)) % 10**8}"
            self.kernels[spec] = add_kernel(self.bb, primfunc(spec), name)
        return self.kernels[spec]

    def site(self, root, matches) -> _Site:
        """The site of the match rooted at ``root``, analysed and planned once (``fusable`` and
        ``replace`` both ask)."""
        if root not in self.sites:
            self.sites[root] = self._analyse(root, matches)
        return self.sites[root]

    def _analyse(self, root, matches) -> _Site:
        p = self.pattern
        conv, x = matches[p.conv], matches[p.x]
        weight = _value(matches[p.w])
        structure = detect_conv(weight)
        bias_expr, residual = matches.get(p.b), matches.get(p.r)
        if residual is not None and _value(residual) is not None and bias_expr is None:
            bias_expr, residual = residual, None  # the "residual" was the bias add
        bias = None if bias_expr is None else _value(bias_expr)
        epilogue = epilogue_of(root)
        return _Site(weight, structure, self.decide(conv, x, structure), bias, bias_expr, residual, epilogue)

    def decide(self, conv, x, structure) -> Decision:
        attrs = _conv_attrs(conv)
        if attrs["data_layout"] != "NCHW" or attrs["kernel_layout"] != "OIHW":
            return Decision(None, f"layout {attrs['data_layout']}/{attrs['kernel_layout']}; "
                                  "sparse conv kernels take NCHW/OIHW")
        if attrs["padding"][:2] != attrs["padding"][2:]:
            return Decision(None, f"asymmetric padding {attrs['padding']}")
        try:
            shape = [int(d) for d in x.ty.shape.values]
        except (TypeError, AttributeError):
            return Decision(None, "input shape is not static; conv kernels are specialised to it")
        if x.ty.dtype != "float32" or structure.dtype != "float32":
            return Decision(None, RELAX_FLOAT32_ONLY.format(dtype=x.ty.dtype))
        params = {"stride": tuple(attrs["strides"]), "padding": tuple(attrs["padding"][:2]),
                  "dilation": tuple(attrs["dilation"]), "groups": attrs["groups"], "batch": shape[0],
                  "height": shape[2], "width": shape[3]}
        return choose_conv(structure, params, self.target)

    def fusable(self, root, matches) -> bool:
        """Whether the kernels take every op of the match: an activation they have as an epilogue,
        a bias of one value per filter, a residual shaped like the output."""
        if epilogue_of(root) is None:
            return False
        site = self.site(root, matches)
        if site.bias is not None and not _per_channel(site.bias_expr, site.weight.shape[0]):
            return False
        return site.residual is None or _same_shape(site.residual, matches[self.pattern.conv])

    def replace(self, root, matches, remap):
        """The kernel call replacing the match rooted at ``root`` (None: it stays dense)."""
        site = self.site(root, matches)
        self.record(site)
        if site.decision.kernel is None:
            return None
        conv = matches[self.pattern.conv]
        x, out_shape = remap(matches[self.pattern.x]), conv.ty.shape
        bias_vector = None if site.bias is None else site.bias.reshape(-1)
        spec = dataclasses.replace(site.decision.kernel, epilogue=site.epilogue, residual=site.residual is not None)
        if site.is_pattern:
            packed = pack(spec, site.weight, bias_vector)
            arrays = [relax.const(getattr(packed, f)) for f in PACKED_FIELDS]
            extra = remap(site.residual) if site.residual is not None else relax.const(np.zeros(1, np.float32))
            return relax.call_tir(self.kernel(spec), [x, *arrays, extra],
                                  out_ty=relax.TensorType(out_shape, "float32"))
        packed = to_bsr(site.weight[:, :, 0, 0], spec.block, spec.parts, bias_vector)
        arrays = [relax.const(getattr(packed, f)) for f in BSR_FIELDS]
        n, c, h, w = (int(d) for d in matches[self.pattern.x].ty.shape.values)
        sh, sw = (int(v) for v in _conv_attrs(conv)["strides"])
        if (sh, sw) != (1, 1):  # a strided 1x1 conv reads every stride-th position
            x = relax.op.strided_slice(x, axes=[2, 3], begin=[0, 0], end=[h, w], strides=[sh, sw])
            h, w = -(-h // sh), -(-w // sw)
        arrays.append(relax.const(np.zeros(1, np.float32)) if site.residual is None  # no residual
                      else relax.op.reshape(remap(site.residual), [n, spec.out_features, h * w]))
        flat = relax.op.reshape(x, [n, c, h * w])
        out = relax.call_tir(self.kernel(spec), [flat, *arrays],
                             out_ty=relax.TensorType([n, spec.out_features, h * w], "float32"))
        return relax.op.reshape(out, out_shape)

    def record(self, site: _Site) -> None:
        spec = site.decision.kernel
        if spec is None:
            label = "dense"
        else:
            label = ("pattern conv" if site.is_pattern else f"bsr {spec.block[0]}x{spec.block[1]} channels") + \
                (" +residual" if site.residual is not None else "") + ("" if site.epilogue == "none" else f" +{site.epilogue}")
        name = layer_name(self.names, site.weight, f"conv{len(self.layers)}")
        self.layers.append(LayerReport(name, "relax.nn.conv2d", site.structure.shape, site.structure.summary(),
                                       site.structure.density, label, site.decision.reason,
                                       None if spec is None else site.decision.estimated_speedup))

    def rewrite(self, func: relax.Function) -> relax.Function:
        found = outermost_matches(func, self.pattern, self.fusable)
        return rewrite_sites(func, {var: functools.partial(self.replace, root, matches)
                                    for var, (root, matches) in found.items()})


def _per_channel(bias: relax.Expr, channels: int) -> bool:
    """Whether adding ``bias`` to an NCHW output adds one value per channel: shaped [C, 1, 1] or
    [1, C, 1, 1] (a [C] vector would broadcast along the width instead)."""
    try:
        dims = [int(d) for d in bias.ty.shape.values]
    except (TypeError, AttributeError):
        return False
    return len(dims) in (3, 4) and dims[-3] == channels and dims[-2:] == [1, 1] and all(d == 1 for d in dims[:-3])


def _same_shape(expr, conv) -> bool:
    try:
        return [int(d) for d in expr.ty.shape.values] == [int(d) for d in conv.ty.shape.values]
    except (TypeError, AttributeError):
        return False


#: Convolutions with a constant weight that no kernel takes: reported dense, not skipped silently.
OTHER_CONVS = ("relax.nn.conv1d", "relax.nn.conv3d", "relax.nn.conv1d_transpose", "relax.nn.conv2d_transpose")


def _other_convs(mod, names: dict[str, str]) -> list[LayerReport]:
    """A dense report entry for each conv of OTHER_CONVS with a constant weight in ``mod``."""
    found = []

    def visit(expr):
        op = getattr(getattr(expr, "op", None), "name", None) if isinstance(expr, relax.Call) else None
        weight = _value(expr.args[1]) if op in OTHER_CONVS and len(expr.args) > 1 else None
        if weight is not None:
            found.append(LayerReport(layer_name(names, weight, op.removeprefix("relax.nn.")), op, tuple(weight.shape),
                                     "-", None, "dense", "sparsepass rewrites 2-D convs and linear layers; "
                                     "this one runs as TVM builds it"))

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func.body, visit)
    return found


def SparsifyConv2d(target=None):  # noqa: N802
    """A Relax module pass: PCONV 3x3 and sparse 1x1 conv2d layers -> sparsepass kernels (other
    convolutions are reported, dense)."""

    def transform(mod, _ctx):
        bb = relax.BlockBuilder(mod)
        names = constant_names(mod)
        rewriter = _SparsifyConv(bb, canonical_target(target), names)
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function):
                bb.update_func(gvar, rewriter.rewrite(func))
        return append_report(bb.get(), rewriter.layers + _other_convs(mod, names))

    return ir.transform.module_pass(transform, opt_level=1, name="sparsepass.SparsifyConv2d")
