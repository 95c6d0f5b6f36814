"""RecogniseSilu: ``x * sigmoid(x)`` in Relax becomes one ``R.nn.silu(x)``.

torch.export decomposes ``nn.SiLU`` (EfficientNet's, and LLaMA's MLP activation)
into a sigmoid and a multiply, which no sparse kernel can take as its epilogue
and which TVM legalizes with a scalar exp. As one ``R.nn.silu`` it fuses into
the conv or linear kernel before it (and, left alone, runs on the vectorised
SiLU of legalize.py). Either operand order; a sigmoid used elsewhere stays.
"""

from __future__ import annotations

from tvm import relax
from tvm.relax.dpl import is_op, rewrite_call, wildcard

from sparsepass.passes.relax.bindings import Bindings


def recognise_silu(func: relax.Function) -> relax.Function:
    """``func`` with each ``x * sigmoid(x)`` replaced by ``R.nn.silu(x)``."""
    x = wildcard()
    sigmoid = is_op("relax.sigmoid")(x)
    root = is_op("relax.multiply")(x, sigmoid) | is_op("relax.multiply")(sigmoid, x)
    bindings = Bindings(func)

    def rewrite(orig, matches):
        operand = matches[x]
        if not bindings.only_feeds_the_next([matches[sigmoid]], [operand]):
            return orig  # the sigmoid is used elsewhere too
        return relax.op.nn.silu(operand)

    return rewrite_call(root, rewrite, func)


def RecogniseSilu():  # noqa: N802
    """A Relax function pass: ``x * sigmoid(x)`` -> ``R.nn.silu(x)`` (see the module)."""
    return relax.transform.function_pass(lambda func, _mod, _ctx: recognise_silu(func), opt_level=1,
                                         name="sparsepass.RecogniseSilu")
