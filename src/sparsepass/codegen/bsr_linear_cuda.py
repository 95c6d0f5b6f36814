"""The BSR linear kernel for NVIDIA GPUs (CUDA), and its CPU emulation.

Same arguments as the CPU kernel (the ``parts`` array is accepted and unused),
so the torch op and the Relax pass call either the same way.

``Y = epilogue(X @ W.T + bias)`` with W in our BSR layout. One thread block per
(block row, tile of rows of X). Each thread owns a register tile of ``ROWS``
rows of X by ``cols`` of the block's R outputs, so every value it reads from
shared memory feeds several multiply-adds: with one output per thread (the
first version of this kernel) a shared load per multiply-add capped it at a
quarter of the FP32 rate. Per stage the threads stage, in shared memory, the
X columns of ``group`` consecutive kept blocks (about 32 columns: one 32x32
block, or 32 blocks of 32x1, so narrow blocks do not pay a barrier each) and
those blocks' weights, then read both as 4-wide vectors.

Shared layout: ``xs[row, k]`` (row pitch padded by 4 floats so the rows a warp
reads at one k fall in different banks and stay 16-byte aligned) and
``ws[k, r]``, a contiguous copy of the blocks' ``data[b, c, r]``. A thread's
rows are ``ty + i * threads_y`` (interleaved, for conflict-free reads), its
columns ``tx * cols + j`` (contiguous, one vector read).

No GPU is needed to check the index arithmetic: `generate_emulated` builds the
same macros into a CPU kernel where the thread axes are serial loops, split at
each barrier into a load phase and a compute phase (what ``__syncthreads``
guarantees), with per-thread accumulators in an array. Tests run it against
PyTorch; `generate` is compiled to CUDA and through nvcc on every CI run.
"""

from __future__ import annotations

import dataclasses

from sparsepass.codegen.epilogue import epilogue_fn
from sparsepass.codegen.spec import KernelSpec
from sparsepass.codegen.tvm_api import T

ENTRY = "bsr_linear_cuda"

#: Threads per block the geometry aims at, rows of X per thread, floats per shared vector read.
THREADS = 128
ROWS = 4
VEC = 4
#: Columns of X (summed over the staged blocks) per stage, at least.
STAGE_K = 32
#: Static shared memory a kernel may use (the CUDA limit without opting in to more).
SHARED_BYTES = 48 * 1024


@dataclasses.dataclass(frozen=True)
class Geometry:
    """How a spec's kernel maps onto threads.

    cols : outputs (of the block's R) per thread; threads_x = R / cols
    threads_y : rows-of-X groups per block; tile = threads_y * ROWS rows of X per block
    group : kept blocks staged per barrier pair; stage_k = group * C padded to VEC
    pitch : floats per row of the shared X tile
    """

    cols: int
    threads_x: int
    threads_y: int
    group: int
    stage_k: int

    @property
    def threads(self) -> int:
        return self.threads_x * self.threads_y

    @property
    def tile(self) -> int:
        return self.threads_y * ROWS

    @property
    def pitch(self) -> int:
        return self.stage_k + VEC

    def shared_bytes(self, r: int) -> int:
        return 4 * (self.tile * self.pitch + self.stage_k * r)


def geometry(spec: KernelSpec) -> Geometry:
    """The thread mapping for ``spec``; ValueError if its blocks need too much shared memory."""
    r, c = spec.block
    cols = VEC if r % VEC == 0 else 1
    threads_x = r // cols
    if threads_x > 1024:
        raise ValueError(f"block height {r} exceeds what one CUDA thread block can hold")
    group = max(1, STAGE_K // c)
    geo = Geometry(cols=cols, threads_x=threads_x, threads_y=max(1, THREADS // threads_x),
                   group=group, stage_k=-(-group * c // VEC) * VEC)
    if geo.threads < geo.stage_k:
        raise ValueError(f"{r}x{c} blocks: {geo.threads} threads cannot stage {geo.stage_k} columns of X "
                         f"at once; use narrower blocks on GPUs")
    if geo.shared_bytes(r) > SHARED_BYTES:
        raise ValueError(f"{r}x{c} blocks need {geo.shared_bytes(r)} bytes of shared memory per thread "
                         f"block, over CUDA's {SHARED_BYTES}; use narrower blocks on GPUs")
    return geo


def _parts(spec: KernelSpec):
    n, k = spec.out_features, spec.in_features
    r, c = spec.block
    geo = geometry(spec)
    ct, ty_n, group, sk = geo.cols, geo.threads_y, geo.group, geo.stage_k
    threads, tile, pitch = geo.threads, geo.tile, geo.pitch
    row_step = threads // sk  # rows of the X tile loaded per pass (geometry: threads >= stage_k)
    x_rows = -(-tile // row_step)
    w_loads = -(-(sk * r) // threads)
    act = epilogue_fn(spec.epilogue)

    @T.macro
    def load_x(xs, X, indices, m0, j0, end, tid):
        """xs[row, g*C + cc] = X[m0 + row, column cc of kept block j0 + g] (0 past the end).

        Thread ``tid`` loads one k (``tid % stage_k``) of every ``row_step``-th row: its
        column of X, found through ``indices``, is looked up once per stage."""
        kk = tid % sk
        col = indices[T.min(j0 + kk // c, end - 1)] * c + kk % c
        for e in range(x_rows):
            if tid < row_step * sk and tid // sk + e * row_step < tile:
                xs[(tid // sk + e * row_step) * pitch + kk] = T.if_then_else(
                    kk < group * c and j0 + kk // c < end and col < k
                    and m0 + (tid // sk + e * row_step) < X.shape[0],
                    X[T.min(m0 + (tid // sk + e * row_step), X.shape[0] - 1), T.min(col, k - 1)],
                    T.float32(0))

    @T.macro
    def load_w(ws, data, j0, end, tid):
        """ws[g*C + cc, rr] = data[j0 + g, cc, rr] (0 past the end): one contiguous run of data."""
        for e in range(w_loads):
            if e * threads + tid < sk * r:
                ws[(e * threads + tid) // r, (e * threads + tid) % r] = T.if_then_else(
                    (e * threads + tid) // r < group * c and j0 + (e * threads + tid) // r // c < end,
                    data[T.min(j0 + (e * threads + tid) // r // c, end - 1),
                         (e * threads + tid) // r % c, (e * threads + tid) % r],
                    T.float32(0))

    @T.macro
    def compute(acc, base, xr, wr, xs, ws, ty, tx):
        for k4 in range(sk // VEC):
            for i in T.unroll(ROWS):
                xr[T.ramp(i * VEC, 1, VEC)] = xs[T.ramp((ty + i * ty_n) * pitch + k4 * VEC, 1, VEC)]
            for q in T.unroll(VEC):
                if ct == VEC:
                    wr[T.ramp(q * VEC, 1, VEC)] = ws[k4 * VEC + q, T.ramp(tx * VEC, 1, VEC)]
                else:
                    wr[q] = ws[k4 * VEC + q, tx]
            for q in T.unroll(VEC):
                for i in T.unroll(ROWS):
                    for j in T.unroll(ct):
                        acc[base + i * ct + j] = acc[base + i * ct + j] + xr[i * VEC + q] * wr[q * ct + j]

    @T.macro
    def init(acc, base, bias, bn, tx):
        for i in T.unroll(ROWS):
            for j in T.unroll(ct):
                acc[base + i * ct + j] = bias[bn * r + tx * ct + j]

    def finish(value, R, row, col):
        return act(value + R[row, col]) if spec.residual else act(value)

    @T.macro
    def store(Y, R, acc, base, m0, bn, ty, tx):
        for i in T.unroll(ROWS):
            for j in T.unroll(ct):
                if m0 + ty + i * ty_n < Y.shape[0] and bn * r + tx * ct + j < n:
                    Y[m0 + ty + i * ty_n, bn * r + tx * ct + j] = finish(
                        acc[base + i * ct + j], R, m0 + ty + i * ty_n, bn * r + tx * ct + j)

    return geo, load_x, load_w, compute, init, store


def generate(spec: KernelSpec):
    """The CUDA PrimFunc for ``spec`` (thread-bound low-level TIR)."""
    n, k, (r, c), nb = spec.out_features, spec.in_features, spec.block, spec.block_rows
    geo, load_x, load_w, compute, init, store = _parts(spec)
    tile, group, per_thread = geo.tile, geo.group, ROWS * geo.cols

    @T.prim_func
    def kernel(x: T.handle, d: T.handle, ind: T.handle, ptr: T.handle, prt: T.handle, bi: T.handle,
               res: T.handle, y: T.handle):
        T.func_attr({"global_symbol": ENTRY, "tirx.noalias": True, "tirx.is_scheduled": True,
                     "sparsepass.kernel": "bsr_linear.cuda"})
        M = T.int64()
        NNZB = T.int64()
        X = T.match_buffer(x, (M, k), "float32", align=4, offset_factor=1)
        data = T.match_buffer(d, (NNZB, c, r), "float32", align=4)
        indices = T.match_buffer(ind, (NNZB,), "int32", align=4)
        indptr = T.match_buffer(ptr, (nb + 1,), "int32", align=4)
        T.match_buffer(prt, (spec.parts + 1,), "int32", align=4)  # CPU load balance; unused here
        bias = T.match_buffer(bi, (nb * r,), "float32", align=4)
        R = T.match_buffer(res, (M, n) if spec.residual else (1,), "float32", align=4, offset_factor=1)
        Y = T.match_buffer(y, (M, n), "float32", align=4, offset_factor=1)
        bx = T.launch_thread("blockIdx.x", nb)
        by = T.launch_thread("blockIdx.y", (M + tile - 1) // tile)
        tx = T.launch_thread("threadIdx.x", geo.threads_x)
        ty = T.launch_thread("threadIdx.y", geo.threads_y)
        xs = T.alloc_buffer((tile * geo.pitch,), "float32", scope="shared")
        ws = T.alloc_buffer((geo.stage_k, r), "float32", scope="shared")
        acc = T.alloc_buffer((per_thread,), "float32", scope="local")
        xr = T.alloc_buffer((ROWS * VEC,), "float32", scope="local")
        wr = T.alloc_buffer((VEC * geo.cols,), "float32", scope="local")
        init(acc, 0, bias, bx, tx)
        for s in range((indptr[bx + 1] - indptr[bx] + group - 1) // group):
            T.tvm_storage_sync("shared")
            load_x(xs, X, indices, by * tile, indptr[bx] + s * group, indptr[bx + 1], ty * geo.threads_x + tx)
            load_w(ws, data, indptr[bx] + s * group, indptr[bx + 1], ty * geo.threads_x + tx)
            T.tvm_storage_sync("shared")
            compute(acc, 0, xr, wr, xs, ws, ty, tx)
        store(Y, R, acc, 0, by * tile, bx, ty, tx)

    return kernel


def generate_emulated(spec: KernelSpec):
    """The same kernel for the CPU: thread axes as loops, barriers as phase boundaries."""
    n, k, (r, c), nb = spec.out_features, spec.in_features, spec.block, spec.block_rows
    geo, load_x, load_w, compute, init, store = _parts(spec)
    tile, group, per_thread = geo.tile, geo.group, ROWS * geo.cols
    tx_n, ty_n = geo.threads_x, geo.threads_y

    @T.prim_func
    def kernel(x: T.handle, d: T.handle, ind: T.handle, ptr: T.handle, prt: T.handle, bi: T.handle,
               res: T.handle, y: T.handle):
        T.func_attr({"global_symbol": ENTRY, "tirx.noalias": True})
        M = T.int64()
        NNZB = T.int64()
        X = T.match_buffer(x, (M, k), "float32", align=4, offset_factor=1)
        data = T.match_buffer(d, (NNZB, c, r), "float32", align=4)
        indices = T.match_buffer(ind, (NNZB,), "int32", align=4)
        indptr = T.match_buffer(ptr, (nb + 1,), "int32", align=4)
        T.match_buffer(prt, (spec.parts + 1,), "int32", align=4)  # CPU load balance; unused here
        bias = T.match_buffer(bi, (nb * r,), "float32", align=4)
        R = T.match_buffer(res, (M, n) if spec.residual else (1,), "float32", align=4, offset_factor=1)
        Y = T.match_buffer(y, (M, n), "float32", align=4, offset_factor=1)
        for bx in range(nb):
            for by in range((M + tile - 1) // tile):
                xs = T.alloc_buffer((tile * geo.pitch,), "float32")
                ws = T.alloc_buffer((geo.stage_k, r), "float32")
                acc = T.alloc_buffer((ty_n * tx_n * per_thread,), "float32")
                xr = T.alloc_buffer((ROWS * VEC,), "float32")
                wr = T.alloc_buffer((VEC * geo.cols,), "float32")
                for ty in range(ty_n):
                    for tx in range(tx_n):
                        init(acc, (ty * tx_n + tx) * per_thread, bias, bx, tx)
                for s in range((indptr[bx + 1] - indptr[bx] + group - 1) // group):
                    for ty in range(ty_n):
                        for tx in range(tx_n):
                            load_x(xs, X, indices, by * tile, indptr[bx] + s * group, indptr[bx + 1],
                                   ty * tx_n + tx)
                            load_w(ws, data, indptr[bx] + s * group, indptr[bx + 1], ty * tx_n + tx)
                    for ty in range(ty_n):
                        for tx in range(tx_n):
                            compute(acc, (ty * tx_n + tx) * per_thread, xr, wr, xs, ws, ty, tx)
                for ty in range(ty_n):
                    for tx in range(tx_n):
                        store(Y, R, acc, (ty * tx_n + tx) * per_thread, by * tile, bx, ty, tx)

    return kernel


def launch_dims(spec: KernelSpec, rows: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(grid, block) of the CUDA launch for ``rows`` rows of X (for running the source directly)."""
    geo = geometry(spec)
    return (spec.block_rows, -(-rows // geo.tile), 1), (geo.threads_x, geo.threads_y, 1)
