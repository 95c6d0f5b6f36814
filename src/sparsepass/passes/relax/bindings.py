"""Who uses what in a Relax function: what a fusing rewrite checks before it swallows a value.

Folding an epilogue into a kernel is only a gain when the values it folds away
have no other use: a matmul whose output also feeds something else would be
computed twice (once dense for that other use, once inside the fused kernel).
"""

from __future__ import annotations

from collections import Counter

from tvm import relax


class Bindings:
    """The bindings of one Relax function: each bound call's variable and its number of users."""

    def __init__(self, func: relax.Function):
        self.var2val = relax.analysis.get_var2val(func)
        self._var_of = {}
        self._users: Counter = Counter()
        for block in func.body.blocks:
            for binding in block.bindings:
                self._var_of[binding.value] = binding.var
                self._users.update(relax.analysis.free_vars(binding.value))
        self._users.update(relax.analysis.free_vars(func.body.body))

    def var_of(self, value: relax.Expr) -> relax.Var | None:
        """The variable bound to ``value`` (a call of the function), or None."""
        return self._var_of.get(value)

    def users(self, value: relax.Expr) -> int:
        """How many bindings (and the function's result) use ``value`` or the variable bound to it."""
        var = value if isinstance(value, relax.Var) else self.var_of(value)
        return 0 if var is None else self._users[var]

    def only_feeds_the_next(self, inner: list[relax.Expr], operands: list[relax.Expr]) -> bool:
        """True when each of ``inner`` (calls a rewrite folds away, its root excluded) has one
        user and none of them is also one of the rewrite's ``operands``."""
        folded = {self.var_of(value) for value in inner} | set(inner)
        folded.discard(None)
        if any(operand in folded for operand in operands):
            return False
        return all(self.users(value) == 1 for value in inner)
