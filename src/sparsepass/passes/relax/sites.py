"""Rewriting chosen bindings of a Relax function once each, with their operands remapped.

dpl's ``rewrite_call`` re-offers matches as it rebuilds the function, and the
variables it rebuilds get new identities, so a pass that decides on the
original function (which matches are outermost, which values have other uses)
cannot find its decisions again by variable. Here the decisions are keyed by
the original bindings' variables, the function is visited once, and each
chosen binding's replacement is built from its operands as they are now.
"""

from __future__ import annotations

from typing import Callable

from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from sparsepass.passes.relax.bindings import Bindings

#: Builds a binding's replacement; ``remap`` maps an original operand to its current value.
#: Returns None to keep the binding as it was.
Replacement = Callable[[Callable[[relax.Expr], relax.Expr]], "relax.Expr | None"]


@mutator
class _SiteRewriter(PyExprMutator):
    def __init__(self, mod, sites: dict, bindings: Bindings):
        super().__init__(mod)
        self.sites, self.bindings = sites, bindings

    def remap(self, operand: relax.Expr) -> relax.Expr:
        """An operand of the original function (a variable, or a value dpl matched through its
        variable) as it is in the function being built."""
        var = self.bindings.var_of(operand)
        return self.visit_expr(operand if var is None else var)

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        build = self.sites.get(binding.var)
        value = None if build is None else build(self.remap)
        if value is None:
            super().visit_var_binding_(binding)
            return
        value = self.builder_.normalize(value)
        emit = self.builder_.emit if isinstance(binding.var, relax.DataflowVar) else self.builder_.emit_output
        self.set_var_remap(binding.var, emit(value, binding.var.name))


def rewrite_sites(func: relax.Function, sites: dict[relax.Var, Replacement], mod=None) -> relax.Function:
    """``func`` with the binding of each variable in ``sites`` replaced by what its builder returns;
    the values only a replaced binding used are removed."""
    if not sites:
        return func
    rewritten = _SiteRewriter(mod, sites, Bindings(func)).visit_expr(func)
    return relax.analysis.remove_all_unused(rewritten)
