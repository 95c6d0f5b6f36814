"""Choosing the outermost matches of a fused-layer pattern, and rewriting each once.

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


def outermost_matches(func: relax.Function, pattern, accept: Callable[[relax.Call, dict], bool]) -> dict:
    """The matches of ``pattern.root`` in ``func`` that are not inside another match, in binding
    order: the root binding's variable -> (the root call, the matches).

    A layer's bias add is a match of its own, inside the one of the residual add
    and activation around it; rewriting it would hide the larger one. Only the
    layer's own sub-patterns (``pattern.parts``) count as inside; an operand
    matched by a wildcard (``pattern.operands``) does not. A match whose inner
    values are also used elsewhere (a matmul feeding a residual add and other ops,
    GPT-2's GELU formula) does not count: fusing it would compute the layer a
    second time; nor does one that ``accept`` refuses (an add the kernel cannot
    take): the inner match is rewritten instead.
    """
    bindings = Bindings(func)
    outermost, inside = {}, set()
    for binding in reversed([b for block in func.body.blocks for b in block.bindings]):
        value = binding.value
        if not isinstance(value, relax.Call) or value in inside or not pattern.root.match(value, bindings.var2val):
            continue
        matches = pattern.root.extract_matched_expr(value, bindings.var2val)
        parts = [part for sub, part in matches.items() if any(sub.same_as(p) for p in pattern.parts)
                 and isinstance(part, relax.Call) and not part.same_as(value)]
        operands = [matches[p] for p in pattern.operands if p in matches]
        if not bindings.only_feeds_the_next(parts, operands) or not accept(value, matches):
            continue
        outermost[binding.var] = (value, matches)
        inside.update(parts)
    return dict(reversed(outermost.items()))


def rewrite_sites(func: relax.Function, sites: dict[relax.Var, Replacement], mod=None) -> relax.Function:
    """``func`` with the binding of each variable in ``sites`` replaced by what its builder returns;
    the values only a replaced binding used are removed."""
    if not sites:
        return func
    rewritten = _SiteRewriter(mod, sites, Bindings(func)).visit_expr(func)
    return relax.analysis.remove_all_unused(rewritten)
