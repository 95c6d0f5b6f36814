"""``pipeline(target)``: sparsepass's passes plus everything a fast build of the rest needs.

Use as ``tvm.compile(mod, target, relax_pipeline=pipeline(target))``. Stages:

1. sparsepass: FoldBatchNorm, RecogniseSilu (the importer's ``x * sigmoid(x)`` as one
   op), CompactChannels (dead channels out), ReorderFilters
   (balanced filter order), SparsifyConv2d (PCONV 3x3 and sparse 1x1 convs),
   RecogniseTanhGelu (GPT-2's written-out GELU as one op), SparsifyLinear
   (pruned constant-weight linears -> BSR kernels), DenseConv2d (the convs kept
   dense -> im2col and a matmul), FoldConstant, DenseMatmul (remaining matmuls,
   dense weights included -> our dense kernel), FastNormalizations (last-axis
   softmax / layer norm);
2. TVM's CPU library dispatch, then legalization with fast GELU/SiLU/tanh,
   op-pattern annotation, constant folding and operator fusion;
3. schedules for the remaining TIR: dlight's CPU GEMV and reduction rules,
   then our injective rule (parallel + vectorised);
4. TVM's dataflow lowering and finalization for the Relax VM.

For CUDA targets: FoldBatchNorm, RecogniseSilu, SparsifyConv2d, RecogniseTanhGelu and SparsifyLinear with the
CUDA kernels, then TVM's CUDA backend (dlight's GPU rules schedule the rest).
"""

from __future__ import annotations

from tvm import ir, relax
from tvm.relax.backend.cpu_generic import pipeline as cpu_generic
from tvm.relax.backend.cuda import pipeline as cuda_backend
from tvm.s_tir import dlight

from sparsepass.codegen.target import canonical_target, tvm_target
from sparsepass.passes.relax.compact import CompactChannels
from sparsepass.passes.relax.conv import FoldBatchNorm, SparsifyConv2d
from sparsepass.passes.relax.dense_conv import DenseConv2d
from sparsepass.passes.relax.dense_matmul import DenseMatmul
from sparsepass.passes.relax.gelu_tanh import RecogniseTanhGelu
from sparsepass.passes.relax.legalize import LEGALIZE_MAP
from sparsepass.passes.relax.normalization import FastNormalizations
from sparsepass.passes.relax.reorder import ReorderFilters
from sparsepass.passes.relax.schedule import CPU_RULES
from sparsepass.passes.relax.silu import RecogniseSilu
from sparsepass.passes.relax.sparsify_linear import SparsifyLinear, SparsifyLinearOptions


def sparsepass_passes(target=None, options: SparsifyLinearOptions = SparsifyLinearOptions()) -> list:
    """The sparsepass rewrites, for users composing their own Sequential: pruned linears to
    BSR kernels, then every remaining matmul (dense weights folded to constants) to ours."""
    return [FoldBatchNorm(), RecogniseSilu(), CompactChannels(target), ReorderFilters(), SparsifyConv2d(target),
            RecogniseTanhGelu(), SparsifyLinear(target, options), DenseConv2d(target), relax.transform.FoldConstant(),
            DenseMatmul(target),
            FastNormalizations(target)]


def _cuda_stages(target_dict: dict, tvm_tgt, options) -> list:
    """On NVIDIA GPUs: our BSR kernels, then TVM's CUDA backend (dlight GPU schedules)."""
    return [
        FoldBatchNorm(),
        RecogniseSilu(),
        CompactChannels(target_dict),
        SparsifyConv2d(target_dict),
        RecogniseTanhGelu(),
        SparsifyLinear(target_dict, options),
        relax.transform.DecomposeOpsForInference(),
        *cuda_backend.library_dispatch_passes(tvm_tgt),
        *cuda_backend.legalize_passes(tvm_tgt),
        *cuda_backend.dataflow_lower_passes(tvm_tgt),
        *cuda_backend.finalize_passes(tvm_tgt),
    ]


def pipeline(target=None, options: SparsifyLinearOptions = SparsifyLinearOptions()) -> ir.transform.Pass:
    """A Relax pipeline for ``tvm.compile(..., relax_pipeline=...)`` on ``target`` (CPU or CUDA)."""
    target_dict = canonical_target(target)
    tvm_tgt = tvm_target(target_dict)
    if target_dict["kind"] == "cuda":
        stages = _cuda_stages(target_dict, tvm_tgt, options)
    elif target_dict["kind"] != "llvm":
        raise NotImplementedError(f"pipeline() builds for llvm (CPUs) and cuda; got {target_dict['kind']!r}")
    else:
        stages = _cpu_stages(target_dict, tvm_tgt, options)

    def run(mod: ir.IRModule, _ctx) -> ir.IRModule:
        with tvm_tgt:
            return ir.transform.Sequential(stages)(mod)

    return ir.transform.module_pass(run, opt_level=0, name="sparsepass.pipeline")


def _cpu_stages(target_dict: dict, tvm_tgt, options) -> list:
    return [
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
