"""The BSR linear kernel for NVIDIA GPUs (CUDA), and its CPU emulation.

Same arguments as the CPU kernel (the ``parts`` array is accepted and unused),
so the torch op and the Relax pass call either the same way.

``Y = epilogue(X @ W.T + bias)`` with W in our BSR layout. One thread block per
(block row, tile of ``THREADS_Y * ROWS`` rows of X); threadIdx.x is the block's
row r (R threads, reading ``data[b, c, r]`` coalesced), threadIdx.y a group of
``ROWS`` rows of X whose accumulators stay in registers. For each kept block,
the threads stage the X tile it needs (``rows x C``) in shared memory, then
every thread adds ``C x ROWS`` products.

No GPU is needed to check the index arithmetic: `generate_emulated` builds the
same macros into a CPU kernel where the thread axes are serial loops, split at
each barrier into a load phase and a compute phase (what ``__syncthreads``
guarantees), with per-thread accumulators in an array. Tests run it against
PyTorch; `generate` is compiled to CUDA and through nvcc on every CI run.
"""

from __future__ import annotations

from sparsepass.codegen.epilogue import epilogue_fn
from sparsepass.codegen.spec import KernelSpec
from sparsepass.codegen.tvm_api import T

ENTRY = "bsr_linear_cuda"

#: Row groups per thread block (threadIdx.y) and rows of X per thread (registers).
THREADS_Y = 8
ROWS = 4


def _parts(spec: KernelSpec):
    n, k = spec.out_features, spec.in_features
    r, c = spec.block
    nb = spec.block_rows
    tile = THREADS_Y * ROWS
    threads = THREADS_Y * r
    loads = -(-(tile * c) // threads)  # shared-tile elements each thread loads
    act = epilogue_fn(spec.epilogue)

    @T.macro
    def load_tile(xs, X, m0, col0, tid):
        for e in range(loads):
            if e * threads + tid < tile * c:
                xs[(e * threads + tid) // c, (e * threads + tid) % c] = T.if_then_else(
                    m0 + (e * threads + tid) // c < X.shape[0] and col0 + (e * threads + tid) % c < k,
                    X[T.min(m0 + (e * threads + tid) // c, X.shape[0] - 1),
                      T.min(col0 + (e * threads + tid) % c, k - 1)],
                    T.float32(0))

    @T.macro
    def accumulate(acc, base, xs, data, blk, ty, tx):
        for cc in range(c):
            for i in T.unroll(ROWS):
                acc[base + i] = acc[base + i] + xs[ty * ROWS + i, cc] * data[blk, cc, tx]

    @T.macro
    def init(acc, base, bias, bn, tx):
        for i in T.unroll(ROWS):
            acc[base + i] = bias[bn * r + tx]

    def finish(value, R, row, col):
        return act(value + R[row, col]) if spec.residual else act(value)

    @T.macro
    def store(Y, R, acc, base, m0, bn, ty, tx):
        for i in T.unroll(ROWS):
            if m0 + ty * ROWS + i < Y.shape[0] and bn * r + tx < n:
                Y[m0 + ty * ROWS + i, bn * r + tx] = finish(acc[base + i], R, m0 + ty * ROWS + i, bn * r + tx)

    return n, k, r, c, nb, tile, load_tile, accumulate, init, store


def generate(spec: KernelSpec):
    """The CUDA PrimFunc for ``spec`` (thread-bound low-level TIR)."""
    n, k, r, c, nb, tile, load_tile, accumulate, init, store = _parts(spec)

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
        tx = T.launch_thread("threadIdx.x", r)
        ty = T.launch_thread("threadIdx.y", THREADS_Y)
        xs = T.alloc_buffer((tile, c), "float32", scope="shared")
        acc = T.alloc_buffer((ROWS,), "float32", scope="local")
        init(acc, 0, bias, bx, tx)
        for j in range(indptr[bx + 1] - indptr[bx]):
            T.tvm_storage_sync("shared")
            load_tile(xs, X, by * tile, indices[indptr[bx] + j] * c, ty * r + tx)
            T.tvm_storage_sync("shared")
            accumulate(acc, 0, xs, data, indptr[bx] + j, ty, tx)
        store(Y, R, acc, 0, by * tile, bx, ty, tx)

    return kernel


def generate_emulated(spec: KernelSpec):
    """The same kernel for the CPU: thread axes as loops, barriers as phase boundaries."""
    n, k, r, c, nb, tile, load_tile, accumulate, init, store = _parts(spec)

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
                xs = T.alloc_buffer((tile, c), "float32")
                acc = T.alloc_buffer((THREADS_Y * r * ROWS,), "float32")
                for ty in range(THREADS_Y):
                    for tx in range(r):
                        init(acc, (ty * r + tx) * ROWS, bias, bx, tx)
                for j in range(indptr[bx + 1] - indptr[bx]):
                    for ty in range(THREADS_Y):
                        for tx in range(r):
                            load_tile(xs, X, by * tile, indices[indptr[bx] + j] * c, ty * r + tx)
                    for ty in range(THREADS_Y):
                        for tx in range(r):
                            accumulate(acc, (ty * r + tx) * ROWS, xs, data, indptr[bx] + j, ty, tx)
                for ty in range(THREADS_Y):
                    for tx in range(r):
                        store(Y, R, acc, (ty * r + tx) * ROWS, by * tile, bx, ty, tx)

    return kernel


def launch_dims(spec: KernelSpec, rows: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(grid, block) of the CUDA launch for ``rows`` rows of X (for running the source directly)."""
    tile = THREADS_Y * ROWS
    return (spec.block_rows, -(-rows // tile), 1), (spec.block[0], THREADS_Y, 1)
