"""Slices of an imported dynamic model marked in bounds where torch.export's dim bounds prove it.

A Hugging Face encoder slices its position table to the sequence length ``s``:
TVM 0.27's importer emits ``strided_slice(table, end=s)`` without assuming the end
in bounds, typed ``T.min(s, 512)``; adding that to the token embeddings (length
``s``) then has no known shape (only ``ndim=3``), which later legalizations
refuse. torch.export knows ``s <= 512`` and the importer keeps it as the function
attribute ``tir_var_upper_bound``: under those bounds the slice is in bounds, and
saying so (``assume_inbound=True``) types it ``s`` and everything after it too;
the shapes the importer computed from it (reshape targets) are simplified the same way.
"""

from __future__ import annotations

from tvm import ir, relax
from tvm.relax.expr_functor import PyExprMutator, mutator
from tvm.sym import Analyzer, ConstIntBound


def _analyzer(func: relax.Function) -> Analyzer | None:
    attrs = func.attrs
    if attrs is None or "tir_var_upper_bound" not in attrs:
        return None
    upper = {str(k): int(v) for k, v in attrs["tir_var_upper_bound"].items()}
    lower = {str(k): int(v) for k, v in attrs["tir_var_lower_bound"].items()} if \
        "tir_var_lower_bound" in attrs else {}
    analyzer = Analyzer()
    for var in relax.analysis.defined_symbolic_vars(func):
        if var.name in upper:
            analyzer.update(var, ConstIntBound(lower.get(var.name, 0), upper[var.name]), override=True)
    return analyzer


@mutator
class _InboundSlices(PyExprMutator):
    def __init__(self, analyzer: Analyzer):
        super().__init__()
        self.analyzer = analyzer

    def in_bounds(self, call: relax.Call) -> bool:
        data, axes, begins, ends, strides = call.args
        try:
            shape = data.ty.shape.values
            axes, begins, ends, strides = (tuple(t.fields) for t in (axes, begins, ends, strides))
        except AttributeError:
            return False  # symbolic axes or an unknown shape: nothing to prove
        prove = self.analyzer.can_prove
        return all(int(stride) == 1 and prove(begin >= 0) and prove(end <= shape[int(axis)]) and prove(begin <= end)
                   for axis, begin, end, stride in zip(axes, begins, ends, strides))

    def visit_shape_expr_(self, shape: relax.ShapeExpr) -> relax.Expr:
        """Shapes the importer computed from the slice (``reshape(., [T.min(s, 512)])``) too."""
        return relax.ShapeExpr([self.analyzer.simplify(dim) for dim in shape.values])

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if getattr(call.op, "name", None) != "relax.strided_slice" or call.attrs.assume_inbound \
                or len(call.args) != 5 or not self.in_bounds(call):
            return call
        return relax.op.strided_slice(*call.args, assume_inbound=True)


def mark_inbound_slices(mod: ir.IRModule) -> ir.IRModule:
    """``mod`` with the slices of ``main`` that its dims' bounds keep in bounds marked so."""
    func = mod["main"]
    analyzer = _analyzer(func)
    if analyzer is None:
        return mod
    out = ir.IRModule(dict(mod.functions_items()), attrs=mod.attrs)
    out["main"] = _InboundSlices(analyzer).visit_expr(func)
    return out
