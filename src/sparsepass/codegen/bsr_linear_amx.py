"""The BSR linear kernel on Intel AMX tiles, for bfloat16 models with R x C blocks.

On a CPU with AMX, PyTorch's dense bfloat16 linear runs 4.6x its float32 speed,
and the float32-computing kernels of bsr_linear_cpu lose to it below 10%
density. This kernel multiplies on the tiles themselves (TDPBF16PS: 16x16
outputs += 16xC by Cx16 bfloat16, float32 accumulation, RNE, denormals
flushed): a block of R x C weights (R 16 or 32, C 2 to 32) is one or two tiles
of C/2 rows, prepacked in the pair-interleaved ("VNNI") layout the instruction
reads, and the matching C columns of 16 rows of X are one tile loaded straight
from X (no gather, no transpose: why the block must be at least 2 columns wide,
and no wider than a tile's 64-byte rows). A narrow block costs nearly as much
as a wide one (a tile multiply has a fixed cost), so per weight 32x32 is the
fastest and 32x2 3.3-4.1 times slower, still faster than the float32 kernels.

Layout "amx": the work is (32 rows of X, part of the block rows) pairs, with
four accumulator tiles (2 x 16 rows of X by R/16 x 16 outputs), two tiles of X
and R/16 of weights: the 8 tiles AMX has. A block row's result goes through a
small float32 buffer, where the bias, residual and epilogue are applied and Y
is written in its dtype. Each thread configures its tiles once per call (the
parallel launch is explicit, so that code runs per thread: LDTILECFG costs
about as much as a 10%-dense block row), and again where fewer than 32 rows
of X are left, with as many rows (X is never read past its end). Tile
registers take immediates, so the loops over tiles are unrolled at parse time.
The intrinsics take only integers and pointers, so no bfloat16 arithmetic
reaches TVM (which cannot emit bfloat16 vector operands).

A float32 model runs here too when PyTorch's float32 matmul precision allows
bfloat16 (``torch.backends.mkldnn.matmul.fp32_precision == "bf16"``, which
``torch.set_float32_matmul_precision("medium")`` sets): what PyTorch's own
linear then computes, bfloat16 products (X and W rounded to nearest even)
summed in float32. X is rounded into a bfloat16 copy first (VCVTNEPS2BF16, a
parallel pass bound by memory: 1.2-1.7x the bfloat16 kernel's time in all),
Y and the residual stay float32.
"""

from __future__ import annotations

import ctypes
import functools
import platform

from sparsepass.codegen.epilogue import finisher, result_fn
from sparsepass.codegen.spec import KernelSpec
from sparsepass.codegen.tvm_api import T

#: Name of the generated function inside its module.
ENTRY = "bsr_linear"

#: Rows of X per unit of work: two 16-row tiles.
TOKENS = 32

#: Block widths it takes: the K of one multiply (a tile row of X holds a block's columns; 32 fill
#: its 64 bytes, narrower blocks run narrower, cheaper multiplies).
BLOCK_COLS = (2, 4, 8, 16, 32)

#: Block heights it takes: one or two 16-row tiles of outputs.
BLOCK_ROWS = (16, 32)

#: LLVM features the kernel is compiled with (every CPU with AMX-BF16 has AVX512-BF16, whose
#: VCVTNE2PS2BF16 rounds the results: a sixth of the instructions of the rounding TVM emits).
FEATURES = ("+amx-tile", "+amx-bf16", "+avx512bf16")

#: TVM pass configuration the kernel is compiled with: StorageRewrite would hoist each thread's
#: tile configuration and accumulator buffers out of the parallel launch, sharing them between
#: threads.
PASS_CONFIG = {"tirx.disable_storage_rewrite": True}


#: Activation dtypes it reads and writes: bfloat16, and float32 multiplied in bfloat16.
DTYPES = ("bfloat16", "float32")

#: float32 X is rounded to bfloat16 in runs of this many columns (one VCVTNEPS2BF16).
ROUNDING_RUN = 16


def takes_block(rows: int, cols: int, in_features: int, dtype: str = "bfloat16") -> bool:
    """Whether the kernel runs blocks of ``rows x cols`` over ``in_features`` columns of ``dtype``."""
    return (rows in BLOCK_ROWS and cols in BLOCK_COLS and in_features % cols == 0 and dtype in DTYPES
            and (dtype == "bfloat16" or in_features % ROUNDING_RUN == 0))


def unsupported_reason(spec: KernelSpec) -> str | None:
    """Why ``spec`` cannot use the AMX kernel, or None."""
    r, c = spec.block
    if spec.dtype not in DTYPES:
        return f"AMX tiles take bfloat16 activations (or float32 ones rounded to it), not {spec.dtype}"
    if spec.dtype == "float32" and spec.in_features % ROUNDING_RUN:
        return (f"in_features {spec.in_features} is not a multiple of {ROUNDING_RUN} (float32 X is rounded "
                f"to bfloat16 {ROUNDING_RUN} columns at a time)")
    if r not in BLOCK_ROWS or c not in BLOCK_COLS:
        return (f"block {r}x{c}: the AMX kernel takes {' or '.join(map(str, BLOCK_ROWS))} rows by "
                f"{', '.join(map(str, BLOCK_COLS))} columns")
    if spec.in_features % c:
        return f"in_features {spec.in_features} is not a multiple of {c} (the block's columns)"
    return None


def compile_target(target: dict) -> dict:
    """The target with the AMX features LLVM needs (a VM's CPU name may not imply them)."""
    features = [f for f in target.get("mattr", []) if f not in FEATURES]
    return {**target, "mattr": [*features, *FEATURES]}


#: Linux's arch_prctl request for permission to use an extended state, and AMX's state number.
_SYS_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA = 158, 0x1023, 18


@functools.cache
def tile_permission() -> bool:
    """Whether Linux grants this process AMX's tile state (asked once; TDPBF16PS faults without
    it, and kernels before 5.16 do not grant it)."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.syscall(_SYS_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA) == 0


def require_tile_permission() -> None:
    if not tile_permission():
        raise RuntimeError("AMX kernels cannot run here: Linux did not grant this process AMX tile "
                           "state (no AMX, a kernel older than 5.16, or not Linux on x86-64)")


def _intrinsic(name: str, *args):
    return T.evaluate(T.call_llvm_intrin("void", f"llvm.x86.{name}", *args))


def _rounded(*halves):
    """The bfloat16 bits (int16 lanes) of float32 vectors of 16 lanes each: one, or two
    concatenated. Round to nearest even like PyTorch, but denormals flush to zero (as TDPBF16PS
    treats them anyway)."""
    if len(halves) == 1:
        return T.call_llvm_pure_intrin("int16x16", "llvm.x86.avx512bf16.cvtneps2bf16.512", halves[0])
    low, high = halves
    return T.call_llvm_pure_intrin("int16x32", "llvm.x86.avx512bf16.cvtne2ps2bf16.512", high, low)


def generate(spec: KernelSpec):
    """The PrimFunc for ``spec`` (layout "amx")."""
    reason = unsupported_reason(spec)
    if reason:
        raise ValueError(f"no AMX kernel for {spec}: {reason}")
    n, k = spec.out_features, spec.in_features
    r, cols = spec.block
    nb, nparts = spec.block_rows, spec.parts
    halves = r // 16  # weight tiles per block (16 outputs each)
    short_last_row = n % r
    finish, result = finisher(spec), result_fn(spec)
    tt = TOKENS
    dt = spec.dtype
    rounds_x = dt == "float32"  # X rounded into a bfloat16 copy; Y written as float32

    def is_short_row(bn):
        # A Python False (no ragged block row) removes the branch at parse time.
        return bn == nb - 1 if short_last_row else False
    # Tile registers: X 0-1, weights 2-3, accumulators 4-7 (X half a, weight half o: 4 + a * halves + o).

    def tile_rows(tile, rows0, rows1):
        # Rows of a tile: weights one per pair of columns; X and accumulators those of their half
        # of X (at least 1).
        if tile in (2, 3):
            return T.uint8(cols // 2)
        half = tile if tile < 2 else (tile - 4) // halves
        return T.Cast("uint8", rows0) if half == 0 else T.Cast("uint8", T.max(rows1, 1))

    @T.macro
    def configure_tiles(config, rows0, rows1):
        # Palette 1; X tiles of rows as wide as a block (2 bytes a column), the others of 64-byte rows.
        for i in range(64):
            config[i] = T.uint8(0)
        config[0] = T.uint8(1)
        config[16] = T.uint8(2 * cols)
        config[18] = T.uint8(2 * cols)
        for tile in range(2, 8):
            config[16 + 2 * tile] = T.uint8(64)
        config[48] = tile_rows(0, rows0, rows1)
        config[49] = tile_rows(1, rows0, rows1)
        config[50] = tile_rows(2, rows0, rows1)
        config[51] = tile_rows(3, rows0, rows1)
        config[52] = tile_rows(4, rows0, rows1)
        config[53] = tile_rows(5, rows0, rows1)
        config[54] = tile_rows(6, rows0, rows1)
        config[55] = tile_rows(7, rows0, rows1)
        _intrinsic("ldtilecfg", T.address_of(config[0]))

    def units(M):
        return (M + tt - 1) // tt * nparts  # (32 rows of X, part) pairs

    @T.macro
    def round_x(X, Xbits, M):
        # Xbits = X rounded to bfloat16, a row per task, ROUNDING_RUN columns per instruction.
        for m in T.parallel(M):
            for j in range(k // ROUNDING_RUN):
                Xbits[m, T.Ramp(T.int64(j * ROUNDING_RUN), T.int64(1), ROUNDING_RUN)] = _rounded(
                    X[m, T.Ramp(T.int64(j * ROUNDING_RUN), T.int64(1), ROUNDING_RUN)])

    @T.macro
    def store_row(Y, Ybits, acc, out, bias, R, row, u, bn):
        # One row of the block row's results: bias, residual, epilogue; rounded unless Y is float32.
        for h in T.unroll(halves):
            for v in T.vectorized(16):
                if rounds_x:
                    Y[row, bn * r + h * 16 + v] = result(acc[u, h * 16 + v] + bias[bn * r + h * 16 + v], R,
                                                         (row, bn * r + h * 16 + v))
                else:
                    out[h * 16 + v] = result(acc[u, h * 16 + v] + bias[bn * r + h * 16 + v], R,
                                             (row, bn * r + h * 16 + v))
        if not rounds_x:
            Ybits[row, T.Ramp(T.Cast("int64", bn) * r, T.int64(1), r)] = _rounded(
                *[out[T.Ramp(T.int64(h * 16), T.int64(1), 16)] for h in range(halves)])

    @T.macro
    def block_row(X, data, indices, indptr, bias, R, Y, Ybits, acc, out, M, m0, bn):
        # Y[m0:m0+32, bn*R:(bn+1)*R]: the block row's blocks on the tiles, then stored with bias,
        # residual and epilogue through ``acc``. X holds bfloat16 values (or their bits).
        for c in T.unroll(2 * halves):
            _intrinsic("tilezero", T.int8(4 + c))
        for j in range(indptr[bn + 1] - indptr[bn]):
            for a in T.unroll(2):
                if T.Cast("int64", a) * 16 < M - m0:
                    _intrinsic("tileloadd64", T.int8(a),
                               T.address_of(X[m0 + a * 16, indices[indptr[bn] + j] * cols]), T.int64(k * 2))
            for o in T.unroll(halves):
                _intrinsic("tileloadd64", T.int8(2 + o), T.address_of(data[indptr[bn] + j, o, 0, 0]), T.int64(64))
            for a in T.unroll(2):
                if T.Cast("int64", a) * 16 < M - m0:
                    for o in T.unroll(halves):
                        _intrinsic("tdpbf16ps", T.int8(4 + a * halves + o), T.int8(a), T.int8(2 + o))
        for a in T.unroll(2):
            if T.Cast("int64", a) * 16 < M - m0:
                for o in T.unroll(halves):
                    _intrinsic("tilestored64", T.int8(4 + a * halves + o), T.address_of(acc[a * 16, o * 16]),
                               T.int64(r * 4))
        for u in range(tt):
            if m0 + u < M:
                if is_short_row(bn):
                    for v in range(short_last_row):
                        Y[m0 + u, bn * r + v] = finish(acc[u, v] + bias[bn * r + v], R, (m0 + u, bn * r + v))
                else:
                    store_row(Y, Ybits, acc, out, bias, R, m0 + u, u, bn)

    @T.prim_func
    def kernel(x: T.handle, d: T.handle, ind: T.handle, ptr: T.handle, prt: T.handle,
               bi: T.handle, res: T.handle, y: T.handle):
        T.func_attr({"global_symbol": ENTRY, "tirx.noalias": True, "tirx.is_scheduled": True,
                     "sparsepass.kernel": "bsr_linear.amx"})
        M = T.int64()
        NNZB = T.int64()
        X = T.match_buffer(x, (M, k), dt, align=4, offset_factor=1)
        data = T.match_buffer(d, (NNZB, halves, cols // 2, 32), "int16", align=4)
        indices = T.match_buffer(ind, (NNZB,), "int32", align=4)
        indptr = T.match_buffer(ptr, (nb + 1,), "int32", align=4)
        parts = T.match_buffer(prt, (nparts + 1,), "int32", align=4)
        bias = T.match_buffer(bi, (nb * r,), "float32", align=4)
        R = T.match_buffer(res, (M, n) if spec.residual else (1,), dt if spec.residual else "float32",
                           align=4, offset_factor=1)
        Y = T.match_buffer(y, (M, n), dt, align=4, offset_factor=1)
        Ybits = T.decl_buffer((M, n), "int16", data=Y.data, elem_offset=Y.elem_offset) if not rounds_x \
            else Y  # bfloat16 Y, stored as bits (float32 Y: stored as it is)
        # What the tiles load: bfloat16 X, or float32 X rounded into a copy of bfloat16 bits.
        Xbits = T.alloc_buffer((M, k), "int16", align=64) if rounds_x else X
        if rounds_x:
            round_x(X, Xbits, M)
        # (32 rows of X, part) pairs on the parallel loop; each thread's task configures its
        # tiles once (and again for the ragged last rows of X) and releases them at the end.
        with T.attr(0, "pragma_parallel_launch_point", 1):
            config = T.alloc_buffer((64,), "uint8", align=64)
            acc = T.alloc_buffer((tt, r), "float32", align=64)
            out = T.alloc_buffer((r,), "float32", align=64)  # one row's results, to be rounded
            configured = T.alloc_buffer((1,), "int64")  # rows of X the tiles are configured for
            configured[0] = T.int64(0)
            for t in T.parallel(units(M)):
                m0 = t // nparts * tt
                if configured[0] != T.min(M - m0, tt):
                    configure_tiles(config, T.min(M - m0, 16), T.min(M - m0 - 16, 16))
                    configured[0] = T.min(M - m0, tt)
                for q in range(parts[t % nparts + 1] - parts[t % nparts]):
                    block_row(Xbits, data, indices, indptr, bias, R, Y, Ybits, acc, out, M, m0,
                              parts[t % nparts] + q)
            _intrinsic("tilerelease")

    return kernel
