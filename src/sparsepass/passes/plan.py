"""The planner: from a weight's Structure to a kernel, or to "stay dense" with a reason.

Every candidate is priced by a small cost model: the multiply-adds a kernel
really performs (the stored elements of its BSR form times the rows of X),
divided by how close that kernel's loop layout gets to the CPU's FMA peak.
The efficiencies are measured numbers (benchmarks/bench_linear.py prints them)
and live in one frozen `CostModel`, so they are data rather than branches.
A layer stays dense unless the best sparse kernel is estimated faster than
PyTorch's dense linear by at least ``CostModel.min_speedup``.
"""

from __future__ import annotations

import dataclasses
import math

from sparsepass.codegen import bsr_linear_amx
from sparsepass.codegen.io_dtype import IO_DTYPES
from sparsepass.codegen.spec import KernelSpec
from sparsepass.codegen.target import half_precision_features, is_cuda, is_host, vector_registers
from sparsepass.passes.analysis import Structure, spans_needed

#: Rows of X assumed when the caller does not know the batch (BERT-base's 128 tokens).
DEFAULT_TOKENS = 128


@dataclasses.dataclass(frozen=True)
class CostModel:
    """Efficiencies (fraction of FMA peak) measured on an AVX-512 CPU, one thread.

    rows_full_vector : "rows" layout when a block's R rows fill whole vectors (R % 16 == 0)
    rows_part_vector : "rows" layout per filled lane when R < 16 (R=8 -> half of this)
    tokens : "tokens" layout (broadcast weight, vector of tokens), by block height 1/2/4/8+
    dense : PyTorch's dense float32 linear
    dense_half : (dtype, CPU feature, speed): how much faster PyTorch's dense layer runs in a
        half-precision dtype than in float32 when the CPU has that feature; the first entry whose
        feature the CPU has (or whose feature is "") decides. Our kernels compute in float32
        whatever the dtype, so this is what a half-precision layer's sparse kernel has to beat.
        Measured on a Sapphire Rapids-class VM, one thread, BERT FFN and three ResNet convs,
        the feature sets below made by capping oneDNN (ONEDNN_MAX_CPU_ISA); each entry is the
        fastest of the four (the planner then errs towards dense): bfloat16 with AMX 4.6x float32
        (convs 1.1-3.8x), with AVX-512 BF16 only 0.7x (convs 0.5-1.3x: 1.0 taken), with neither
        0.26x (convs 0.25-0.45x); float16 with AVX-512 FP16 1.1x (convs 0.5-1.0x), without it
        0.13x (convs 0.02-0.04x: PyTorch converts). AMX-FP16 is assumed as fast as AMX-BF16
    amx : the AMX kernel ("amx" layout, bfloat16 R x C blocks) per stored element of a 32x32
        block, in the same units: 1.8-2.1 measured on the Sapphire Rapids-class VM at 10-20%
        density (4.5-5.3x and 2.9x over PyTorch's AMX dense bfloat16 linear on BERT FFN shapes);
        the lower is taken
    amx_block_columns : a block's fixed cost on AMX (its tile loads and multiply issue), in
        columns: a block of C columns costs as much as C + this. Fitted to BERT FFN linears at 10%
        (one thread, side by side): per stored element 32x16 1.1x 32x32's time, 32x8 1.4x, 32x4
        2.1x, 32x2 3.6x
    amx_half_height : the efficiency of 16-row blocks relative to 32-row ones (16x32 1.1x, 16x16
        1.4x and 16x8 1.8x the time per element of 32x32)
    dense_float32_in_bfloat16 : how much faster PyTorch runs a float32 linear under float32 matmul
        precision "bf16" (``torch.backends.mkldnn.matmul.fp32_precision``; on AMX) than at full
        precision: 2.1-4.1x measured on the Sapphire Rapids-class VM (BERT FFN shapes, one
        thread, side by side); the fastest is taken
    amx_float32_rounding : the AMX kernel's cost of rounding one float32 element of X to bfloat16
        (a pass over X, bound by memory), in the same units: fitted to 32x32 blocks at 10%, 128
        tokens (side by side, the float32 kernel took 1.2-1.4x the bfloat16 one's time for K = 256
        to 1024, 1.4-1.7x for K = 768 and 3072 on BERT FFN shapes, as X outgrows L2; it ran
        1.2-2.8x faster than the float32 "rows" kernel on every shape)
    float32_kernels_on_amx_cpus : the "rows" and "tokens" kernels' efficiency on a CPU with AMX
        relative to the Zen 5 the rest was fitted on. On the Sapphire Rapids-class VM, 32x1 at 10%
        and 20% ran 7.1x and 3.5x PyTorch's float32 FFN where the model said 11.7x and 5.9x (0.6),
        and in bfloat16 1.15x and 0.75x PyTorch's AMX dense where it said 2.5x and 1.3x (0.5)
    call_overhead : fixed cost of one kernel call, in multiply-adds at peak
    min_speedup : a sparse kernel must beat dense by this factor to be chosen
    """

    rows_full_vector: float = 0.95
    rows_part_vector: float = 0.85
    tokens: tuple[float, ...] = (0.45, 0.7, 0.85, 0.85)
    dense: float = 0.8
    dense_half: tuple[tuple[str, str, float], ...] = (
        ("bfloat16", "amx-bf16", 4.6), ("bfloat16", "avx512bf16", 1.0), ("bfloat16", "", 0.45),
        ("float16", "amx-fp16", 4.6), ("float16", "avx512fp16", 1.1), ("float16", "", 0.15))
    amx: float = 1.8
    amx_block_columns: float = 7.0
    amx_half_height: float = 0.85
    dense_float32_in_bfloat16: float = 4.0
    amx_float32_rounding: float = 20.0
    float32_kernels_on_amx_cpus: float = 0.5
    call_overhead: float = 2.0e5
    min_speedup: float = 1.25
    vector_lanes: int = 16

    def rows_efficiency(self, r: int) -> float:
        if r % self.vector_lanes == 0:
            return self.rows_full_vector
        lanes = min(r, self.vector_lanes)
        return self.rows_part_vector * lanes / self.vector_lanes

    def tokens_efficiency(self, r: int) -> float:
        return self.tokens[min(int(math.log2(r)), len(self.tokens) - 1)]

    def amx_efficiency(self, r: int, c: int) -> float:
        """The AMX kernel's rate on R x C blocks: ``amx`` at 32x32, less for narrower or shorter."""
        width = c / (c + self.amx_block_columns) * (32 + self.amx_block_columns) / 32
        return self.amx * width * (1.0 if r == 32 else self.amx_half_height)

    def float32_kernel_factor(self, target: dict) -> float:
        """How the float32-computing kernels fare on ``target`` relative to the fitted model."""
        return self.float32_kernels_on_amx_cpus if "amx-bf16" in half_precision_features(target) else 1.0

    def dense_speedup(self, dtype: str, target: dict, float32_in_bfloat16: bool = False) -> float:
        """How much faster PyTorch runs a dense layer in ``dtype`` than in float32 on ``target``
        (a float32 one with bfloat16 products where ``float32_in_bfloat16``, on AMX)."""
        if dtype == "float32":
            amx = "amx-bf16" in half_precision_features(target)
            return self.dense_float32_in_bfloat16 if float32_in_bfloat16 and amx else 1.0
        features = half_precision_features(target) | {""}
        return next((speed for name, feature, speed in self.dense_half
                     if name == dtype and feature in features), 1.0)


DEFAULT_COST = CostModel()


@dataclasses.dataclass(frozen=True)
class GpuCostModel:
    """The planner's view of NVIDIA GPUs. NOT yet measured: no GPU was lent to the
    sessions that wrote it; benchmarks/gpu/ measures it where one is.

    min_block_rows : block heights below this leave a warp half idle: stay dense
    sparse_efficiency : the BSR kernel's fraction of cuBLAS's dense rate per stored element
    min_speedup : a sparse kernel must beat dense by this factor to be chosen
    """

    min_block_rows: int = 16
    sparse_efficiency: float = 0.3
    min_speedup: float = 1.25


DEFAULT_GPU_COST = GpuCostModel()


@dataclasses.dataclass(frozen=True)
class Decision:
    """What the planner chose for one layer.

    kernel : the spec of the chosen sparse kernel, or None to stay dense
    reason : why, in words a user can act on
    dense_cost, sparse_cost : the model's estimates (multiply-adds at peak)
    """

    kernel: KernelSpec | None
    reason: str
    dense_cost: float = 0.0
    sparse_cost: float = 0.0

    @property
    def estimated_speedup(self) -> float:
        return self.dense_cost / self.sparse_cost if self.sparse_cost else 1.0


#: Most tokens a "tokens"/"channels" register tile spans (8 vectors of 16).
MAX_TOKEN_TILE = 128


def _tile(layout: str, r: int, tokens: int = DEFAULT_TOKENS, target: dict | None = None) -> int:
    """Register tile, measured on BERT shapes. "rows": 8 rows of X up to R=32 on AVX-512 (more
    rows ran slower on Zen 4 and Zen 5), then 16 accumulator vectors, and never more
    accumulators than the registers left after a block row's vectors and X's broadcast (AVX2's
    16 registers: 32x1 with 2 rows ran 1.7x faster on a Zen 2 than with 8, 16x1 best with 6).
    "tokens": 16 accumulator vectors (R x tile / lanes), at most 128 tokens and no more than
    the rows of X rounded up to a vector (padding tokens are computed), in multiples of 16
    (24 or 48 tokens ran 4-7x slower): on Zen 5, 4x4 with 64 tokens ran 1.15x and 1x1 with 128
    1.04x faster than with half as many (two alternating accumulator sets, for more
    independent chains, bought nothing: these layouts wait on L2, not on FMA latency)."""
    lanes, registers = (16, 32) if target is None or is_cuda(target) else vector_registers(target)
    if layout == "amx":
        return bsr_linear_amx.TOKENS
    if layout == "rows":
        row_vectors = -(-r // lanes)
        return max(1, min(8 if r <= 32 else 256 // r, (registers - row_vectors - 1) // row_vectors))
    return max(16, min(MAX_TOKEN_TILE, 16 * lanes // max(r, 1) // 16 * 16, -(-tokens // 16) * 16))


def _amx_usable(structure: Structure, target: dict, float32_in_bfloat16: bool = False) -> bool:
    """Whether the weights can run on AMX tiles on ``target`` (on this machine: whether Linux
    grants the tile state too): bfloat16 ones, and float32 ones allowed bfloat16 products."""
    dtype_fits = structure.dtype == "bfloat16" or (structure.dtype == "float32" and float32_in_bfloat16)
    return (dtype_fits and "amx-bf16" in half_precision_features(target)
            and (not is_host(target) or bsr_linear_amx.tile_permission()))


def _candidates(structure: Structure, tokens: int, cost: CostModel, amx: bool, float32_factor: float = 1.0):
    for fit in structure.fits:
        if not spans_needed(fit, structure.shape):
            continue
        r, c = fit.shape
        work = max(fit.stored, 1) * tokens / float32_factor
        if r >= 8:
            yield work / cost.rows_efficiency(r) + cost.call_overhead, "rows", fit
        if r <= 8:
            yield work / cost.tokens_efficiency(r) + cost.call_overhead, "tokens", fit
        if amx and bsr_linear_amx.takes_block(r, c, structure.shape[1], structure.dtype):
            padded = -(-tokens // bsr_linear_amx.TOKENS) * bsr_linear_amx.TOKENS  # whole tiles of X
            rounding = cost.amx_float32_rounding * tokens * structure.shape[1] if structure.dtype == "float32" else 0
            yield (max(fit.stored, 1) * padded / cost.amx_efficiency(r, c) + rounding + cost.call_overhead,
                   "amx", fit)


def _choose_gpu(structure: Structure, target: dict, epilogue: str, cost: GpuCostModel) -> Decision:
    """BSR on a GPU: the tallest exact-ish block of at least ``min_block_rows`` rows."""
    n, k = structure.shape
    candidates = [f for f in structure.fits if f.rows >= cost.min_block_rows and f.rows <= 64]
    if not candidates:
        return _dense("no block shape tall enough for a GPU warp")
    fit = min(candidates, key=lambda f: (f.stored, -f.rows * f.cols))
    dense_cost = float(n * k)
    sparse_cost = fit.stored / cost.sparse_efficiency
    if sparse_cost * cost.min_speedup > dense_cost:
        return _dense(f"density {structure.density:.2f}: {fit.rows}x{fit.cols} blocks store "
                      f"{fit.stored / (n * k):.2f} of the weight; cuBLAS dense is estimated faster",
                      dense_cost, sparse_cost)
    spec = KernelSpec.make(out_features=n, in_features=k, block=fit.shape, layout="rows", tile=1,
                           epilogue=epilogue, target=target)
    fill = structure.nnz / fit.stored
    return Decision(spec, f"BSR {fit.rows}x{fit.cols} (cuda), {fit.blocks} blocks, fill {fill:.2f}",
                    dense_cost, sparse_cost)


def _dtype_refusal(dtype: str, target: dict) -> str | None:
    """Why a weight of ``dtype`` cannot get a sparse kernel on ``target``, or None."""
    if dtype not in IO_DTYPES:
        return f"weight dtype is {dtype}; sparse kernels take float32, bfloat16 or float16"
    if dtype != "float32" and is_cuda(target):
        # cuBLAS runs half precision on tensor cores (H100: about 15x its float32 rate), which the
        # CUDA BSR kernel, computing in float32 on the CUDA cores, cannot beat at any density.
        return (f"weight dtype is {dtype}: cuBLAS runs it on tensor cores, faster than the float32 "
                "CUDA kernels at any density")
    return None


def _dense(reason: str, dense_cost: float = 0.0, sparse_cost: float = 0.0) -> Decision:
    return Decision(None, reason, dense_cost, sparse_cost)


def choose(
    structure: Structure,
    target: dict,
    *,
    tokens: int = DEFAULT_TOKENS,
    epilogue: str = "none",
    cost: CostModel = DEFAULT_COST,
    allow_amx: bool = True,
    float32_in_bfloat16: bool = False,
) -> Decision:
    """Choose the kernel for a linear layer with weight ``structure`` on ``target``.

    A half-precision weight gets a kernel that reads and writes its dtype (computing in float32,
    or, for bfloat16 R x C blocks (C >= 2) on a CPU with AMX, on AMX tiles unless ``allow_amx`` is off).
    ``float32_in_bfloat16``: a float32 layer may multiply in bfloat16 as PyTorch's own linear does
    under float32 matmul precision "bf16" (on AMX tiles; the dense layer it must beat is priced so)."""
    refusal = _dtype_refusal(structure.dtype, target)
    if refusal:
        return _dense(refusal)
    if not structure.finite:
        return _dense("weight holds NaN or Inf; kept dense so results match PyTorch exactly")
    if structure.kind == "dense":
        return _dense("weight has no zeros")
    if is_cuda(target):
        return _choose_gpu(structure, target, epilogue, DEFAULT_GPU_COST)
    n, k = structure.shape
    dense_cost = n * k * tokens / (cost.dense * cost.dense_speedup(structure.dtype, target, float32_in_bfloat16))
    sparse_cost, layout, fit = min(  # ties go to the coarser block
        _candidates(structure, tokens, cost, allow_amx and _amx_usable(structure, target, float32_in_bfloat16),
                    cost.float32_kernel_factor(target)), key=lambda c: (c[0], -c[2].rows * c[2].cols))
    if sparse_cost * cost.min_speedup > dense_cost:
        return _dense(
            f"density {structure.density:.2f}: best sparse kernel ({fit.rows}x{fit.cols} "
            f"{layout}) estimated {dense_cost / sparse_cost:.2f}x the speed of dense at {tokens} "
            f"tokens; a rewrite needs {cost.min_speedup:.2f}x",
            dense_cost,
            sparse_cost,
        )
    spec = KernelSpec.make(
        out_features=n,
        in_features=k,
        block=fit.shape,
        layout=layout,
        tile=_tile(layout, fit.rows, tokens, target),
        epilogue=epilogue,
        dtype=structure.dtype,
        target=target,
    )
    fill = structure.nnz / fit.stored if fit.stored else 1.0
    reason = f"BSR {fit.rows}x{fit.cols} ({layout}), {fit.blocks} blocks, fill {fill:.2f}"
    if layout == "amx" and structure.dtype == "float32":
        reason += ", bfloat16 products (float32 matmul precision 'bf16')"
    return Decision(spec, reason, dense_cost, sparse_cost)


#: A pattern conv's speed per kept tap relative to PyTorch's dense conv per tap (measured on
#: Zen 5, one thread: 2.2-2.8x faster at density 0.22 for single convs, i.e. about 0.55).
PATTERN_CONV_EFFICIENCY = 0.55


def choose_conv(structure, conv: dict, target: dict, cost: CostModel = DEFAULT_COST):
    """Kernel for a conv layer: a ConvSpec (3x3 pattern), a KernelSpec (1x1 as BSR), or dense.

    ``conv`` holds the layer's stride, padding, dilation, groups and input height/width.
    """
    from sparsepass.codegen.pattern_conv_cpu import ALL_TAPS, ConvSpec

    refusal = _dtype_refusal(structure.dtype, target)
    if refusal:
        return _dense(refusal)
    if not structure.finite:
        return _dense("weight holds NaN or Inf; kept dense so results match PyTorch exactly")
    if conv["groups"] != 1:
        return _dense(f"groups={conv['groups']} (depthwise/grouped convs stay dense)")
    if conv["dilation"] != (1, 1):
        return _dense(f"dilation {conv['dilation']} is not supported")
    if structure.nnz == structure.size:
        return _dense("weight has no zeros")
    kh, kw = structure.shape[2:]
    if (kh, kw) == (1, 1) and is_cuda(target):
        return _dense("1x1 convs run dense (cuDNN) on GPUs")
    if (kh, kw) == (1, 1):
        if conv["padding"] != (0, 0):
            return _dense("1x1 conv with padding stays dense")
        (sh, sw), height, width = conv["stride"], conv["height"], conv["width"]
        positions = conv["batch"] * -(-height // sh) * -(-width // sw) if height else DEFAULT_TOKENS
        return _choose_channels(structure.matrix, target, positions, cost)
    if (kh, kw) != (3, 3) or conv["stride"][0] != conv["stride"][1] or conv["padding"][0] != conv["padding"][1]:
        return _dense(f"{kh}x{kw} kernels (or uneven stride/padding) stay dense; 3x3 and 1x1 are supported")
    if conv["height"] is None:
        return _dense("input size unknown: pass example_inputs so the kernel can be specialised")
    dense_cost = float(structure.size) / cost.dense_speedup(structure.dtype, target)
    sparse_cost = structure.kernels_kept * structure.max_taps / PATTERN_CONV_EFFICIENCY
    if sparse_cost * cost.min_speedup > dense_cost:
        return _dense(f"density {structure.density:.2f}: pattern conv estimated "
                      f"{dense_cost / sparse_cost:.2f}x the speed of dense; a rewrite needs "
                      f"{cost.min_speedup:.2f}x", dense_cost, sparse_cost)
    spec = ConvSpec.make(in_channels=structure.shape[1], out_channels=structure.shape[0],
                         height=conv["height"], width=conv["width"], stride=conv["stride"][0],
                         padding=conv["padding"][0], target=target, dtype=structure.dtype,
                         taps=max(1, structure.max_taps) if is_cuda(target) else ALL_TAPS)
    return Decision(spec, f"pattern conv, {len(structure.patterns)} patterns of <= {structure.max_taps} "
                          f"taps, {structure.kernels_kept} kernels", dense_cost, sparse_cost)


def _choose_channels(matrix: Structure, target: dict, positions: int, cost: CostModel) -> Decision:
    """1x1 conv in NCHW: the BSR kernel in its "channels" layout (no transposes)."""
    decision = choose(matrix, target, tokens=positions, cost=cost, allow_amx=False)  # NCHW: no AMX layout
    if decision.kernel is None:
        return decision
    spec = dataclasses.replace(decision.kernel, layout="channels",
                               tile=_tile("channels", decision.kernel.block[0], positions, target))
    return Decision(spec, decision.reason.replace("(rows)", "(channels)").replace("(tokens)", "(channels)"),
                    decision.dense_cost, decision.sparse_cost)
