"""A dense batched matmul for CPUs, for the matmuls a sparse model keeps (attention's Q K^T, P V).

``C[b, m, n] = sum_k A[b, m, k] * B[b, k, n]`` (or ``B[k, n]`` shared by all
batches). TVM 0.27 has no CPU matmul schedule (dlight's CPU rules are GEMV
and reductions) and unscheduled TIR runs ~200x slower than PyTorch, so this
is written like the BSR "rows" kernel: a register tile of ``tile`` rows of A
times ``vector`` columns of B, B's row vectorised and A broadcast, parallel
over (batch, row tile, column chunk).
"""

from __future__ import annotations

import dataclasses

from sparsepass.codegen.spec import SpecMixin
from sparsepass.codegen.tvm_api import T

ENTRY = "dense_matmul"


@dataclasses.dataclass(frozen=True)
class MatmulSpec(SpecMixin):
    """A dense matmul kernel: static K and N, any batch and M."""

    k: int
    n: int
    shared_b: bool  # B is [K, N] for every batch (else [batch, K, N])
    target: str
    tile: int = 8
    vector: int = 32
    op: str = "dense_matmul"



def generate(spec: MatmulSpec):
    """The PrimFunc for ``spec``."""
    k, n, tile, vec = spec.k, spec.n, spec.tile, spec.vector
    chunks, full_chunks, short = -(-n // vec), n // vec, n % vec

    def b_at(B, batch, kk, col):
        return B[kk, col] if spec.shared_b else B[batch, kk, col]

    @T.macro
    def row_tile(A, B, C, batch, m0, chunk, rows):
        acc = T.alloc_buffer((rows, vec), "float32", scope="local")
        if chunk < full_chunks:
            for i in T.unroll(rows):
                for v in T.vectorized(vec):
                    acc[i, v] = T.float32(0)
            for kk in range(k):
                for i in T.unroll(rows):
                    for v in T.vectorized(vec):
                        acc[i, v] = acc[i, v] + A[batch, m0 + i, kk] * b_at(B, batch, kk, chunk * vec + v)
            for i in T.unroll(rows):
                for v in T.vectorized(vec):
                    C[batch, m0 + i, chunk * vec + v] = acc[i, v]
        else:
            for i in T.unroll(rows):
                for v in range(short):
                    acc[i, v] = T.float32(0)
            for kk in range(k):
                for i in T.unroll(rows):
                    for v in range(short):
                        acc[i, v] = acc[i, v] + A[batch, m0 + i, kk] * b_at(B, batch, kk, chunk * vec + v)
            for i in T.unroll(rows):
                for v in range(short):
                    C[batch, m0 + i, chunk * vec + v] = acc[i, v]

    b_shape = (k, n)

    @T.prim_func
    def kernel(a: T.handle, b: T.handle, c: T.handle):
        T.func_attr({"global_symbol": ENTRY, "tirx.noalias": True, "tirx.is_scheduled": True, "sparsepass.kernel": "dense_matmul"})
        BATCH = T.int64()
        M = T.int64()
        A = T.match_buffer(a, (BATCH, M, k), "float32", align=4, offset_factor=1)
        B = T.match_buffer(b, b_shape if spec.shared_b else (BATCH, k, n), "float32", align=4,
                           offset_factor=1)
        C = T.match_buffer(c, (BATCH, M, n), "float32", align=4, offset_factor=1)
        for t in T.parallel(BATCH * (M // tile) * chunks):
            row_tile(A, B, C, t // ((M // tile) * chunks), t // chunks % (M // tile) * tile,
                     t % chunks, tile)
        if M % tile > 0:
            for t in T.parallel(BATCH * (M % tile) * chunks):
                row_tile(A, B, C, t // ((M % tile) * chunks),
                         M // tile * tile + t // chunks % (M % tile), t % chunks, 1)

    return kernel
