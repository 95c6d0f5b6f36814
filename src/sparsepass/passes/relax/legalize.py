"""Legalizations that replace TVM's slow defaults on CPUs.

TVM legalizes ``R.nn.gelu`` with scalar ``erf``: in one FFN it cost more than
both sparse matmuls together. Here GELU, SiLU and tanh use the vectorisable
approximations the sparse kernels' epilogues use (codegen.epilogue).
"""

from __future__ import annotations

from tvm import te

from sparsepass.codegen.epilogue import epilogue_fn


def _elementwise(name: str):
    fn = epilogue_fn(name)

    def legalize(bb, call):
        def compute(x):
            return te.compute(x.shape, lambda *i: fn(x(*i)), name=f"sparsepass_{name}")

        if call.args[0].ty.dtype != "float32":
            return call.op.get_attr("FLegalize")(bb, call)  # TVM's own legalization
        return bb.call_te(compute, call.args[0])

    return legalize


LEGALIZE_MAP = {
    "relax.nn.gelu": _elementwise("gelu"),
    "relax.nn.gelu_tanh": _elementwise("gelu_tanh"),
    "relax.nn.silu": _elementwise("silu"),
    "relax.tanh": _elementwise("tanh"),
}
