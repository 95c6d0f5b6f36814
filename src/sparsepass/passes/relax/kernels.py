"""Adding generated kernels to a Relax module under global symbols no other function has.

A kernel's name says what it is (``sparsepass_layer_norm_64``), but two kernels
can share it (layer norms of one width with different epsilons, ConvNeXt's) and a
module can already hold one of that name (a pass run twice); TVM then refuses the
module for its duplicate global symbol.
"""

from __future__ import annotations

from tvm import ir, relax

#: Why a half-precision layer stays dense in Relax: the kernels added here are float32 (TVM 0.27's
#: importer refuses half-precision PyTorch models anyway).
RELAX_FLOAT32_ONLY = ("input dtype is {dtype}; the Relax passes build float32 kernels (half-precision "
                      "models get sparse kernels through the torch.fx path)")


def add_kernel(bb: relax.BlockBuilder, func, name: str) -> ir.GlobalVar:
    """Add PrimFunc ``func`` to ``bb``'s module as ``name``, or ``name_1``, ``name_2``... if taken."""
    mod = bb.get()
    taken = {gvar.name_hint for gvar in mod.get_global_vars()}
    taken |= {str(f.attrs["global_symbol"]) for f in mod.functions.values() if f.attrs and "global_symbol" in f.attrs}
    symbol, suffix = name, 0
    while symbol in taken:
        suffix += 1
        symbol = f"{name}_{suffix}"
    return bb.add_func(func.with_attr("global_symbol", symbol), symbol)
