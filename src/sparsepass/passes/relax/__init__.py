"""TVM Relax passes: the Relax adapter of the same analysis, planner and kernels.

Each pass is a ``tvm.ir.transform.Pass`` usable inside ``tvm.transform.Sequential``;
``pipeline(target)`` bundles them with the rest of a fast CPU build.
"""

from sparsepass.passes.relax.compact import CompactChannels
from sparsepass.passes.relax.conv import FoldBatchNorm, SparsifyConv2d
from sparsepass.passes.relax.dense_conv import DenseConv2d
from sparsepass.passes.relax.dense_matmul import DenseMatmul
from sparsepass.passes.relax.gelu_tanh import RecogniseTanhGelu
from sparsepass.passes.relax.normalization import FastNormalizations
from sparsepass.passes.relax.pipeline import pipeline, sparsepass_passes
from sparsepass.passes.relax.reorder import ReorderFilters
from sparsepass.passes.relax.report import report
from sparsepass.passes.relax.silu import RecogniseSilu
from sparsepass.passes.relax.sparsify_linear import SparsifyLinear, SparsifyLinearOptions

__all__ = ["CompactChannels", "DenseConv2d", "DenseMatmul", "ReorderFilters", "FastNormalizations", "FoldBatchNorm", "RecogniseSilu",
           "RecogniseTanhGelu",
           "SparsifyConv2d", "SparsifyLinear", "SparsifyLinearOptions", "pipeline", "report",
           "sparsepass_passes"]
