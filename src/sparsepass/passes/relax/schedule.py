"""Schedules for the TIR that legalization leaves, on CPUs.

dlight's CPU rules cover GEMV and reductions (softmax, layer norm). What is
left is injective TIR (elementwise ops, transposes, fused epilogues), which
runs serially and scalar unless scheduled: `Injective` parallelises and
vectorises it. `CPU_RULES` is the ordered rule list the pipeline applies.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir import dlight
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.s_tir.dlight.base import get_extent
from tvm.s_tir.dlight.cpu.base import CPUScheduleRule

#: float32 lanes of the widest vector (AVX-512); smaller extents vectorise whole.
VECTOR_LANES = 16


def _touches_bool(sch, block_rv) -> bool:
    """Whether a block reads or writes a bool tensor: TVM 0.27's vectoriser stores bool lanes as
    int8 vectors, which its BufferStore then rejects (a causal mask, e.g. LLaMA's, hit it)."""
    block = sch.get(block_rv)
    return any(str(getattr(region.source, "dtype", "")) == "bool" for region in [*block.reads, *block.writes])


class Injective(CPUScheduleRule):
    """Every block spatial-only: fuse each block's loops, parallel outside, vector inside."""

    def apply(self, func, target, _tunable):
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        if not infos or not all(info.is_injective() for info in infos):
            return None
        for info in infos:
            loops = sch.get_loops(info.block_rv)
            if not loops:
                continue
            fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
            extent = get_extent(sch, fused)
            if isinstance(extent, int) and extent % VECTOR_LANES == 0 and extent > VECTOR_LANES \
                    and not _touches_bool(sch, info.block_rv):
                outer, inner = sch.split(fused, factors=[None, VECTOR_LANES])
                sch.parallel(outer)
                sch.vectorize(inner)
            else:
                sch.parallel(fused)
        return sch


CPU_RULES = (dlight.cpu.GEMV(), dlight.cpu.Reduction(), Injective())
