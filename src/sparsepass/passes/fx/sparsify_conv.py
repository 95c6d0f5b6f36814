"""The conv half of sparsify_graph: pattern-pruned 3x3 convs and sparse 1x1 convs.

A 3x3 conv with PCONV sparsity becomes ``sparsepass::pattern_conv2d``; a 1x1
conv with block or unstructured sparsity becomes ``sparsepass::bsr_conv1x1``.
Both fuse into their store what follows alone: an activation (ReLU, ReLU6,
GELU, SiLU, tanh), a residual add, or an add then an activation. The kernel is specialised to the input's
height and width, known from the example inputs (ShapeProp) or from the
``val`` meta of an exported graph; without them a conv stays dense, and the
report says so.
"""

from __future__ import annotations

import dataclasses
import functools

import torch
import torch.fx as fx
import torch.nn.functional as F

from sparsepass.codegen.bsr_format import BSR_FIELDS, to_bsr
from sparsepass.codegen.pattern_conv_cpu import ConvSpec
from sparsepass.codegen.pattern_format import FIELDS as PACKED_FIELDS
from sparsepass.codegen.pattern_format import pack
from sparsepass.ops import conv_ops  # noqa: F401  (registers the conv ops)
from sparsepass.passes.analysis import as_array
from sparsepass.passes.conv_analysis import detect_conv
from sparsepass.passes.fx.conv_match import ConvSite, fusable_tail
from sparsepass.passes.fx.match import node_shape
from sparsepass.passes.fx.measure import confirm, random_like, unmeasurable_reason
from sparsepass.passes.fx.splice import chain, register_arrays, splice_call
from sparsepass.passes.plan import DEFAULT_COST, CostModel, Decision, choose_conv
from sparsepass.passes.report import LayerReport


def _conv_params(site: ConvSite) -> dict:
    shape = node_shape(site.x)
    known = shape is not None and len(shape) == 4
    batch, height, width = (shape[0], shape[2], shape[3]) if known else (1, None, None)
    return {"stride": site.stride, "padding": site.padding, "dilation": site.dilation,
            "groups": site.groups, "batch": batch, "height": height, "width": width}


def _label(decision: Decision, epilogue: str, residual: bool) -> str:
    spec = decision.kernel
    base = "pattern conv" if isinstance(spec, ConvSpec) else f"bsr {spec.block[0]}x{spec.block[1]} channels"
    return base + (" +residual" if residual else "") + ("" if epilogue == "none" else f" +{epilogue}")


def _packed(site: ConvSite, spec) -> dict:
    """The conv's weight and bias in its kernel's arrays (pattern CSR, or BSR for 1x1)."""
    bias = None if site.bias is None else site.bias.float().numpy()
    if isinstance(spec, ConvSpec):
        packed = pack(spec, as_array(site.weight), bias)
        return {f: getattr(packed, f) for f in PACKED_FIELDS}
    packed = to_bsr(as_array(site.weight[:, :, 0, 0]), spec.block, spec.parts, bias)
    return {f: getattr(packed, f) for f in BSR_FIELDS}


def _call(site: ConvSite, spec):
    """(op, the arguments after x's buffers) of the kernel call that replaces the conv."""
    if isinstance(spec, ConvSpec):
        return torch.ops.sparsepass.pattern_conv2d.default, (spec.to_json(), site.name)
    return torch.ops.sparsepass.bsr_conv1x1.default, (list(site.stride), spec.to_json(), site.name)


def _measured(site: ConvSite, spec, decision: Decision, arrays: dict, target: dict, cost: CostModel) -> Decision:
    """The decision confirmed (or overturned) by timing the kernel against F.conv2d here."""
    shape = node_shape(site.x)
    unmeasurable = unmeasurable_reason(shape, target)
    if unmeasurable:
        return dataclasses.replace(decision, reason=f"{decision.reason}; not measured: {unmeasurable}")
    x = random_like(shape, site.weight.dtype)
    dense = functools.partial(F.conv2d, x, site.weight, site.bias, site.stride, site.padding)
    residual = random_like(dense().shape, site.weight.dtype) if spec.residual else None
    op, tail = _call(site, spec)
    buffers = [torch.from_numpy(array) for array in arrays.values()]
    return confirm(dataclasses.replace(decision, kernel=spec), dense, residual,
                   lambda: op(x, *buffers, residual, *tail), cost.min_speedup)


def rewrite_conv(gm: fx.GraphModule, site: ConvSite, target: dict, fuse: bool,
                 cost: CostModel = DEFAULT_COST, measure: bool = False) -> LayerReport:
    """Rewrite one conv site if the planner (and, with ``measure``, a timing here) says so; return
    its report entry."""
    if site.why_dense:
        return LayerReport(site.name, "conv2d", (), "-", None, "dense", site.why_dense)
    structure = detect_conv(site.weight)
    if isinstance(site.padding, str):
        decision = Decision(None, f"padding={site.padding!r} stays dense")
    else:
        decision = choose_conv(structure, _conv_params(site), target, cost)
    if decision.kernel is not None:
        last, residual, epilogue = fusable_tail(gm, site.node, allow_residual=True) if fuse \
            else (site.node, None, "none")
        spec = dataclasses.replace(decision.kernel, epilogue=epilogue, residual=residual is not None)
        arrays = _packed(site, spec)
        if measure:
            decision = _measured(site, spec, decision, arrays, target, cost)
    if decision.kernel is None:
        return LayerReport(site.name, "conv2d", structure.shape, structure.summary(), structure.density,
                           "dense", decision.reason)
    report = LayerReport(site.name, "conv2d", structure.shape, structure.summary(), structure.density,
                         _label(decision, epilogue, residual is not None), decision.reason,
                         decision.estimated_speedup if decision.sparse_cost else None)
    op, tail = _call(site, spec)
    splice_call(gm, op, last, (site.x, residual, *tail), register_arrays(gm, site.name, arrays), report,
                chain(site.node, last))
    return report
