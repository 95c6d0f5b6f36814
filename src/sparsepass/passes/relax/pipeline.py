"""``pipeline(target)``: sparsepass's passes plus everything a fast CPU build of the rest needs.

Use as ``tvm.compile(mod, target, relax_pipeline=pipeline(target))``. Stages:

1. sparsepass: SparsifyLinear (pruned constant-weight linears -> BSR kernels),
   FoldConstant, DenseMatmul (remaining matmuls, dense weights included -> our
   dense kernel), FastNormalizations (last-axis softmax / layer norm);
2. TVM's CPU library dispatch, then legalization with fast GELU/SiLU/tanh,
   op-pattern annotation, constant folding and operator fusion;
3. schedules for the remaining TIR: dlight's CPU GEMV and reduction rules,
   then our injective rule (parallel + vectorised);
4. TVM's dataflow lowering and finalization for the Relax VM.
"""

from __future__ import annotations

from sparsepass.codegen.target import canonical_target, tvm_target
from sparsepass.passes.relax.dense_matmul import DenseMatmul
from sparsepass.passes.relax.legalize import LEGALIZE_MAP
from sparsepass.passes.relax.normalization import FastNormalizations
from sparsepass.passes.relax.schedule import CPU_RULES
from sparsepass.passes.relax.sparsify_linear import SparsifyLinear, SparsifyLinearOptions
from tvm import ir, relax
from tvm.relax.backend.cpu_generic import pipeline as cpu_generic
from tvm.s_tir import dlight


def sparsepass_passes(target=None, options: SparsifyLinearOptions = SparsifyLinearOptions()) -> list:
    """The sparsepass rewrites, for users composing their own Sequential: pruned linears to
    BSR kernels, then every remaining matmul (dense weights folded to constants) to ours."""
    return [SparsifyLinear(target, options), relax.transform.FoldConstant(), DenseMatmul(target),
            FastNormalizations(target)]


def pipeline(target=None, options: SparsifyLinearOptions = SparsifyLinearOptions()) -> ir.transform.Pass:
    """A Relax pipeline for ``tvm.compile(..., relax_pipeline=...)`` on the CPU ``target``."""
    target_dict = canonical_target(target)
    tvm_tgt = tvm_target(target_dict)
    if target_dict["kind"] != "llvm":
        raise NotImplementedError(f"pipeline() builds for CPUs (llvm); got target kind {target_dict['kind']!r}")
    stages = [
        *sparsepass_passes(target_dict, options),
        relax.transform.DecomposeOpsForInference(),
        *cpu_generic.library_dispatch_passes(tvm_tgt),
        relax.transform.LegalizeOps(customize_legalize_map=LEGALIZE_MAP),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
        dlight.ApplyDefaultSchedule(*CPU_RULES),
        *cpu_generic.dataflow_lower_passes(tvm_tgt),
        *cpu_generic.finalize_passes(tvm_tgt),
    ]

    def run(mod: ir.IRModule, _ctx) -> ir.IRModule:
        with tvm_tgt:
            return ir.transform.Sequential(stages)(mod)

    return ir.transform.module_pass(run, opt_level=0, name="sparsepass.pipeline")
