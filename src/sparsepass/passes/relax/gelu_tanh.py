"""RecogniseTanhGelu: the tanh-approximate GELU written out in Relax becomes one ``R.nn.gelu_tanh``.

GPT-2 and other Hugging Face models compute ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``
op by op; imported into Relax that is eight elementwise calls, which SparsifyLinear
cannot fold into the kernel before them (and which TVM legalizes with a scalar
tanh). As one ``R.nn.gelu_tanh`` it fuses as the kernel's epilogue. The dpl match
accepts either operand order of each add and multiply; the constants are
checked, and a formula whose intermediate values are used elsewhere stays.
"""

from __future__ import annotations

from tvm import relax
from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

from sparsepass.passes.gelu_formula import CUBIC, SQRT_2_OVER_PI, near
from sparsepass.passes.relax.bindings import Bindings


class _Formula:
    """The formula as a dpl pattern, with a handle on each constant and intermediate."""

    def __init__(self):
        self.x = wildcard()
        self.constants = {name: is_const() for name in ("three", "cubic", "scale", "one", "half")}
        c = self.constants
        cube = is_op("relax.power")(self.x, c["three"])
        cubic = is_op("relax.multiply")(cube, c["cubic"])
        inner = is_op("relax.add")(self.x, cubic)
        scaled = is_op("relax.multiply")(inner, c["scale"])
        tanh = is_op("relax.tanh")(scaled)
        one_plus = is_op("relax.add")(tanh, c["one"])
        half = is_op("relax.multiply")(self.x, c["half"])
        self.intermediates = (cube, cubic, inner, scaled, tanh, one_plus, half)
        self.root = is_op("relax.multiply")(half, one_plus)


_VALUES = {"three": 3.0, "cubic": CUBIC, "scale": SQRT_2_OVER_PI, "one": 1.0, "half": 0.5}


def _scalar(const) -> float | None:
    value = const.value.numpy()
    return float(value) if value.size == 1 and value.dtype.kind == "f" else None


def recognise_tanh_gelu(func: relax.Function) -> relax.Function:
    """``func`` with each written-out tanh-GELU replaced by ``R.nn.gelu_tanh``."""
    formula, bindings = _Formula(), Bindings(func)

    def rewrite(orig, matches):
        if any(not near(_scalar(matches[formula.constants[name]]), value) for name, value in _VALUES.items()):
            return orig
        x = matches[formula.x]
        inner = [matches[part] for part in formula.intermediates]
        if not bindings.only_feeds_the_next(inner, [x]):
            return orig  # an intermediate value is used elsewhere: the formula must stay
        return relax.op.nn.gelu_tanh(x)

    return rewrite_call(formula.root, rewrite, func)


def RecogniseTanhGelu():  # noqa: N802
    """A Relax function pass: written-out tanh-GELUs -> ``R.nn.gelu_tanh`` (see the module)."""
    return relax.transform.function_pass(lambda func, _mod, _ctx: recognise_tanh_gelu(func), opt_level=1,
                                         name="sparsepass.RecogniseTanhGelu")
