"""SparsifyLinear: Relax dense layers with constant weights become call_tir to BSR kernels.

Matches what Relax front ends emit for a linear layer, as one dpl pattern:

    matmul(x, permute_dims(W))  |  matmul(x, W)          (W constant, maybe broadcast_to [..., K, N])
    [add(., b) | add(b, .)]                                (b constant)
    [reshape(., shape)]  [add(., r)]  [relu | gelu | gelu_tanh | silu | tanh]   (folded into the kernel)

and rewrites it to ``R.call_tir(sparsepass_bsr_..., [x2d, data, indices,
indptr, parts, bias])`` where the BSR arrays are constants and the PrimFunc
comes from the same generator the torch.fx path uses. The same analysis and
planner decide; a layer that stays dense is left exactly as it was. The
per-layer report is stored as the module attribute ``sparsepass.report``.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
from tvm import ir, relax, tirx
from tvm.relax.dpl import is_const, is_op, wildcard
from tvm_ffi import structural_equal

from sparsepass.codegen.bsr_format import BSR_FIELDS, to_bsr
from sparsepass.codegen.build import primfunc
from sparsepass.codegen.target import canonical_target
from sparsepass.passes.analysis import detect
from sparsepass.passes.plan import DEFAULT_COST, DEFAULT_TOKENS, CostModel, Decision, choose
from sparsepass.passes.relax.activations import activation_of, epilogue_of
from sparsepass.passes.relax.kernels import RELAX_FLOAT32_ONLY, add_kernel
from sparsepass.passes.relax.names import constant_names, layer_name
from sparsepass.passes.relax.report import append_report
from sparsepass.passes.relax.sites import outermost_matches, rewrite_sites
from sparsepass.passes.report import LayerReport


@dataclasses.dataclass(frozen=True)
class SparsifyLinearOptions:
    """Options of SparsifyLinear (TVM 0.27 accepts no new PassContext config keys).

    tokens : rows of X the planner assumes where the shape is symbolic
    cost : the planner's cost model
    fuse_activations : fold a following ReLU/GELU/SiLU/tanh into the kernel
    """

    tokens: int = DEFAULT_TOKENS
    cost: CostModel = DEFAULT_COST
    fuse_activations: bool = True


class _Pattern:
    """The dpl pattern of one linear layer, with handles on its parts."""

    def __init__(self, fuse_activations: bool):
        self.x, self.w, self.b, self.shape = wildcard(), is_const(), is_const(), wildcard()
        self.w_t = is_op("relax.permute_dims")(self.w)
        # torch's matmul on a 3-D x that is a view comes in as a batched matmul, the weight broadcast
        self.broadcast = is_op("relax.broadcast_to")(self.w_t | self.w, wildcard())
        self.mm = is_op("relax.matmul")(self.x, self.w_t | self.w | self.broadcast)
        self.add = is_op("relax.add")(self.mm, self.b) | is_op("relax.add")(self.b, self.mm)
        self.linear = self.add | self.mm
        self.reshaped = is_op("relax.reshape")(self.linear, self.shape)
        self.r = wildcard()
        out = self.linear | self.reshaped
        self.residual = is_op("relax.add")(out, self.r) | is_op("relax.add")(self.r, out)
        root = self.linear
        if fuse_activations:
            root = activation_of(self.residual) | activation_of(self.linear) | activation_of(self.reshaped) \
                | self.residual | root
        self.root = root
        #: sub-patterns whose matches are part of the layer (not operands such as x or r)
        self.parts = (self.mm, self.add, self.linear, self.reshaped, self.residual)
        self.operands = (self.x, self.r)


def _numpy(const) -> np.ndarray:
    return const.value.numpy()


def _same_shape(a, b) -> bool:
    """True when Relax values ``a`` and ``b`` have the same shape, symbolic dims included."""
    try:
        return _same_dims(a.ty.shape.values, b.ty.shape.values)
    except AttributeError:
        return False


def _same_dims(dims_a, dims_b) -> bool:
    """Equal lists of dims (the importer mixes int32 and int64 constants in shapes)."""
    return len(dims_a) == len(dims_b) and all(
        (isinstance(p, tirx.IntImm) and isinstance(q, tirx.IntImm) and p.value == q.value)
        or structural_equal(p, q) for p, q in zip(dims_a, dims_b))


def linear_weight(matches, pattern) -> np.ndarray:
    """The matched weight as [out_features, in_features] (``matmul(x, W)`` holds it transposed)."""
    w = _numpy(matches[pattern.w])
    return w if pattern.w_t in matches else w.T


def is_linear(matches, pattern) -> bool:
    """A 2-D constant weight applied to each row of x: a broadcast weight must not broadcast x."""
    if _numpy(matches[pattern.w]).ndim != 2:
        return False
    if pattern.broadcast not in matches:
        return True
    x, mm = matches[pattern.x], matches[pattern.mm]
    return _same_dims(x.ty.shape.values[:-1], mm.ty.shape.values[:-1])


def bias_and_residual(matches, pattern) -> tuple[np.ndarray | None, relax.Expr | None]:
    """The constant bias and the residual operand of a match (either may be None): a constant
    "residual" add with no bias before it is the layer's bias."""
    bias = _numpy(matches[pattern.b]) if pattern.b in matches else None
    residual = matches.get(pattern.r)
    if residual is not None and isinstance(residual, ir.Constant) and bias is None:
        return _numpy(residual), None
    return bias, residual


def per_feature(bias: np.ndarray, out_features: int) -> bool:
    """Whether adding ``bias`` to the layer's output adds one value per output feature: shaped
    [..., 1, N] (a [N, 1] constant, one value per token, is no bias even where N = out_features)."""
    return bias.shape[-1:] == (out_features,) and all(d == 1 for d in bias.shape[:-1])


def fusable(matches, pattern, out_features: int) -> bool:
    """Whether the kernel can take every add of the match: one bias of ``out_features`` values
    (not a second constant, nor a constant that broadcasts otherwise) and a residual shaped like
    the output."""
    bias, residual = bias_and_residual(matches, pattern)
    if bias is not None and not per_feature(bias, out_features):
        return False
    if residual is None:
        return True
    output = matches[pattern.reshaped] if pattern.reshaped in matches else matches[pattern.linear]
    return not isinstance(residual, ir.Constant) and _same_shape(residual, output)


def _static_rows(x) -> int | None:
    shape = x.ty.shape
    try:
        return int(np.prod([int(d) for d in shape.values[:-1]]))
    except (TypeError, AttributeError):
        return None


class _Rewriter:
    """Rewrites matches in the functions of one module; adds kernels through ``bb``."""

    def __init__(self, bb: relax.BlockBuilder, target: dict, options: SparsifyLinearOptions, names: dict):
        self.bb, self.target, self.options, self.names = bb, target, options, names
        self.kernels: dict = {}
        self.layers: list[LayerReport] = []  # one per rewritten or examined site, in binding order

    def replace(self, orig, matches, remap):
        """The kernel call replacing the match rooted at ``orig`` (None: it stays), its operands
        mapped to their current values by ``remap``."""
        pattern = self.pattern
        x = matches[pattern.x]
        weight = linear_weight(matches, pattern)
        if len(x.ty.shape.values) < 1:
            return None  # x of unknown rank
        bias, residual = bias_and_residual(matches, pattern)
        epilogue = epilogue_of(orig)
        structure = detect(weight)
        rows = _static_rows(x) or self.options.tokens
        decision = choose(structure, self.target, tokens=rows, epilogue=epilogue, cost=self.options.cost)
        if decision.kernel is not None and (x.ty.dtype != "float32" or decision.kernel.dtype != "float32"):
            decision = Decision(None, RELAX_FLOAT32_ONLY.format(dtype=x.ty.dtype))
        if decision.kernel is not None and residual is not None:
            decision = dataclasses.replace(decision, kernel=dataclasses.replace(decision.kernel, residual=True))
        self.record(_numpy(matches[pattern.w]), structure, decision)
        if decision.kernel is None:
            return None
        return self.call_kernel(orig, remap(x), weight, None if bias is None else bias.reshape(-1),
                                None if residual is None else remap(residual), decision)

    def record(self, constant: np.ndarray, structure, decision: Decision) -> None:
        spec = decision.kernel
        kernel = "dense" if spec is None else (
            f"bsr {spec.block[0]}x{spec.block[1]} {spec.layout}" + (" +residual" if spec.residual else "")
            + ("" if spec.epilogue == "none" else f" +{spec.epilogue}"))
        self.layers.append(LayerReport(
            layer_name(self.names, constant, f"linear{len(self.layers)}"), "relax.matmul", structure.shape, structure.summary(),
            structure.density, kernel, decision.reason,
            decision.estimated_speedup if decision.sparse_cost else None))

    def kernel_gvar(self, spec) -> ir.GlobalVar:
        if spec not in self.kernels:
            name = f"sparsepass_bsr_{spec.out_features}x{spec.in_features}_{spec.block[0]}x{spec.block[1]}_" \
                   f"{spec.layout}_{spec.epilogue}" + ("_residual" if spec.residual else "")
            self.kernels[spec] = add_kernel(self.bb, primfunc(spec), name)
        return self.kernels[spec]

    def call_kernel(self, orig, x, weight, bias, residual, decision: Decision):
        spec = decision.kernel
        bsr = to_bsr(weight, spec.block, spec.parts, bias)
        shape = x.ty.shape.values
        rows = 1
        for d in shape[:-1]:
            rows = rows * d
        x2d = x if len(shape) == 2 else relax.op.reshape(x, [rows, shape[-1]])
        consts = [relax.const(getattr(bsr, f)) for f in BSR_FIELDS]
        if residual is None:
            consts.append(relax.const(np.zeros(1, np.float32)))  # no residual
        else:
            consts.append(relax.op.reshape(residual, [rows, spec.out_features]))
        out = relax.call_tir(self.kernel_gvar(spec), [x2d, *consts],
                             out_ty=relax.TensorType([rows, spec.out_features], "float32"))
        return relax.op.reshape(out, orig.ty.shape)

    def rewrite(self, func: relax.Function) -> relax.Function:
        self.pattern = _Pattern(self.options.fuse_activations)
        pattern = self.pattern

        def accept(root, matches) -> bool:
            return epilogue_of(root) is not None and is_linear(matches, pattern) and fusable(
                matches, pattern, linear_weight(matches, pattern).shape[0])

        sites = {var: functools.partial(self.replace, root, matches)
                 for var, (root, matches) in outermost_matches(func, pattern, accept).items()}
        return rewrite_sites(func, sites)


def sparsify_linear_module(mod: ir.IRModule, target, options: SparsifyLinearOptions) -> ir.IRModule:
    """The transformation behind SparsifyLinear, as a plain function."""
    bb = relax.BlockBuilder(mod)
    rewriter = _Rewriter(bb, canonical_target(target), options, constant_names(mod))
    for gvar, func in mod.functions_items():
        if isinstance(func, relax.Function):
            bb.update_func(gvar, rewriter.rewrite(func))
    return append_report(bb.get(), rewriter.layers)


def SparsifyLinear(target=None, options: SparsifyLinearOptions = SparsifyLinearOptions()):  # noqa: N802
    """A Relax module pass: constant-weight linear layers -> generated BSR kernels.

    Usable anywhere in a ``tvm.transform.Sequential``; skipped below opt_level 1
    and when its name ``sparsepass.SparsifyLinear`` is in PassContext.disabled_pass.
    """

    def transform(mod: ir.IRModule, _ctx) -> ir.IRModule:
        return sparsify_linear_module(mod, target, options)

    return ir.transform.module_pass(transform, opt_level=1, name="sparsepass.SparsifyLinear")
