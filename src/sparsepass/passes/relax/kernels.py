"""Adding generated kernels to a Relax module under global symbols no other function has.

A kernel's name says what it is (``sparsepass_layer_norm_64``), but two kernels
can share it (layer norms of one width with different epsilons, ConvNeXt's) and a
module can already hold one of that name (a pass run twice); TVM then refuses the
module for its duplicate global symbol.
"""

from __future__ import annotations

from tvm import ir, relax


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


def drop_uncalled_kernels(mod: ir.IRModule) -> ir.IRModule:
    """``mod`` without the sparsepass kernels no Relax function calls any more.

    A dpl rewrite may replace a match that a larger one then swallows (a conv rewritten
    alone before its ReLU is fused in): the first kernel stays in the module, and would be
    compiled, unless dropped here.
    """
    called = set()
    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, lambda e: called.add(e.name_hint) if isinstance(
                e, ir.GlobalVar) else None)
    dead = [gvar for gvar, func in mod.functions_items() if func.attrs is not None
            and "sparsepass.kernel" in func.attrs and gvar.name_hint not in called]
    if not dead:
        return mod
    return ir.IRModule({g: f for g, f in mod.functions_items() if g not in dead}, attrs=mod.attrs,
                       global_infos=mod.global_infos)
