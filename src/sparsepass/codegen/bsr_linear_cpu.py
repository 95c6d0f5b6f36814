"""TIR generators for the BSR linear kernel on CPUs (LLVM).

``Y[m, n] = epilogue(bias[n] + sum_k X[m, k] * W[n, k])`` with W in our BSR
layout (see bsr_format). Two loop layouts, both plain low-level TIR that needs
no schedule (the loops are written already tiled, unrolled and vectorised):

- "rows": a register tile of ``tile`` rows of X times one block row; each
  kept block adds ``X[m, k] * block[:, c]`` with the block's R rows as one
  vector. Best for tall blocks (32x1, 16x1): it reaches the CPU's FMA peak.
- "tokens": X is transposed into a workspace first; a tile of ``tile`` tokens
  is the vector and each stored weight is broadcast. For short blocks (1xC,
  4x4) and unstructured weights, where a block's rows are too few to fill a
  vector. Results go to a transposed workspace with vector stores and are
  transposed into Y in square tiles at the end (scattered scalar stores, or a
  scalar transpose, cost twice the multiply-adds; a gathered one is cheap).

- "channels": "tokens" for a 1x1 conv in NCHW, where each image's X is already
  [K, HW] and Y [N_out, HW]: the same tiles, no transposes.

All are parallel over (row tile, part), where parts split block rows into
pieces of equal work, so any contiguous share of the loop is balanced.
"""

from __future__ import annotations

from sparsepass.codegen import bsr_linear_amx
from sparsepass.codegen.epilogue import epilogue_fn, finisher
from sparsepass.codegen.io_dtype import narrow, widen
from sparsepass.codegen.spec import KernelSpec
from sparsepass.codegen.tvm_api import T

#: Name of the generated function inside its module.
ENTRY = "bsr_linear"

#: Side of the square tiles in which the "tokens" layout transposes its output.
TRANSPOSE_TILE = 16


def generate(spec: KernelSpec):
    """The PrimFunc for ``spec`` (layout "rows", "tokens", "channels", or "amx": bsr_linear_amx)."""
    return {"rows": _rows_kernel, "tokens": _tokens_kernel, "channels": _channels_kernel,
            "amx": bsr_linear_amx.generate}[spec.layout](spec)


def _rows_kernel(spec: KernelSpec):
    n, k = spec.out_features, spec.in_features
    r, c = spec.block
    nb, tile, nparts = spec.block_rows, spec.tile, spec.parts
    short_last_row = n % r  # rows of the ragged last block row (0: none)
    dt = spec.dtype

    def is_short_row(bn):
        # A Python False (no ragged block row) removes the branch at parse time.
        return bn == nb - 1 if short_last_row else False

    def col(kb, cc):
        # Clamp reads past K in a ragged last block column; its weights there are 0.
        idx = kb * c + cc
        return T.min(idx, k - 1) if k % c else idx

    finish = finisher(spec)

    @T.macro
    def block_row(X, data, indices, indptr, bias, R, Y, m0, bn, rows):
        acc = T.alloc_buffer((rows, r), "float32", scope="local")
        for i in T.unroll(rows):
            for v in T.vectorized(r):
                acc[i, v] = bias[bn * r + v]
        for j in range(indptr[bn + 1] - indptr[bn]):
            for cc in T.unroll(c):
                for i in T.unroll(rows):
                    for v in T.vectorized(r):
                        acc[i, v] = acc[i, v] + X[m0 + i, col(indices[indptr[bn] + j], cc)] * data[
                            indptr[bn] + j, cc, v]
        if is_short_row(bn):
            for i in T.unroll(rows):
                for v in range(short_last_row):
                    Y[m0 + i, bn * r + v] = finish(acc[i, v], R, (m0 + i, bn * r + v))
        else:
            for i in T.unroll(rows):
                for v in T.vectorized(r):
                    Y[m0 + i, bn * r + v] = finish(acc[i, v], R, (m0 + i, bn * r + v))

    @T.macro
    def all_rows(X, data, indices, indptr, parts, bias, R, Y, M):
        # X is float32 here (the input, or its widened copy).
        for t in T.parallel(M // tile * nparts):
            for q in range(parts[t % nparts + 1] - parts[t % nparts]):
                block_row(X, data, indices, indptr, bias, R, Y, t // nparts * tile,
                          parts[t % nparts] + q, tile)
        if M % tile > 0:
            for t in T.parallel(M % tile * nparts):
                for q in range(parts[t % nparts + 1] - parts[t % nparts]):
                    block_row(X, data, indices, indptr, bias, R, Y, M // tile * tile + t // nparts,
                              parts[t % nparts] + q, 1)

    @T.prim_func
    def kernel(x: T.handle, d: T.handle, ind: T.handle, ptr: T.handle, prt: T.handle,
               bi: T.handle, res: T.handle, y: T.handle):
        T.func_attr({"global_symbol": ENTRY, "tirx.noalias": True, "tirx.is_scheduled": True,
                     "sparsepass.kernel": "bsr_linear.rows"})
        M = T.int64()
        NNZB = T.int64()
        X = T.match_buffer(x, (M, k), spec.dtype, align=4, offset_factor=1)
        data = T.match_buffer(d, (NNZB, c, r), "float32", align=4)
        indices = T.match_buffer(ind, (NNZB,), "int32", align=4)
        indptr = T.match_buffer(ptr, (nb + 1,), "int32", align=4)
        parts = T.match_buffer(prt, (nparts + 1,), "int32", align=4)
        bias = T.match_buffer(bi, (nb * r,), "float32", align=4)
        R = T.match_buffer(res, (M, n) if spec.residual else (1,), _residual_dtype(spec), align=4,
                           offset_factor=1)
        Y = T.match_buffer(y, (M, n), spec.dtype, align=4, offset_factor=1)
        if dt == "float32":  # a Python constant: folded when the script is parsed
            all_rows(X, data, indices, indptr, parts, bias, R, Y, M)
        else:
            # Half-precision X widened once: widening each broadcast in the loop cost 20%.
            xw = T.alloc_buffer((M, k), "float32")
            for m in T.parallel(M):
                for kb in range(k // 16):
                    for u in T.vectorized(16):
                        xw[m, kb * 16 + u] = widen(X[m, kb * 16 + u], dt)
                for u in range(k % 16):
                    xw[m, k // 16 * 16 + u] = widen(X[m, k // 16 * 16 + u], dt)
            all_rows(xw, data, indices, indptr, parts, bias, R, Y, M)

    return kernel


def _post_residual(spec: KernelSpec):
    """For layouts that store a raw tile: the residual and epilogue applied where Y is written."""
    finish = finisher(spec)

    def post(value, R, at):
        return finish(value, R, at) if spec.residual else narrow(value, spec.dtype)

    return post


def _residual_dtype(spec) -> str:
    """R's dtype: the activations' (its placeholder, when there is no residual, is float32)."""
    return spec.dtype if spec.residual else "float32"


def _token_tiles(spec: KernelSpec):
    """The macro both token-vectorised layouts share: X^T tile in, Y^T tile out.

    With a residual, the tile is stored raw: R is added (then the epilogue) where Y is written.
    """
    r, c = spec.block
    tile, nparts = spec.tile, spec.parts
    act = epilogue_fn("none" if spec.residual else spec.epilogue)

    @T.macro
    def token_tiles(xt, yt, data, indices, indptr, parts, bias, tiles):
        for t in T.parallel(tiles * nparts):
            for q in range(parts[t % nparts + 1] - parts[t % nparts]):
                bn = parts[t % nparts] + q
                acc = T.alloc_buffer((r, tile), "float32", scope="local")
                for v in T.unroll(r):
                    for u in T.vectorized(tile):
                        acc[v, u] = bias[bn * r + v]
                for j in range(indptr[bn + 1] - indptr[bn]):
                    for cc in T.unroll(c):
                        for v in T.unroll(r):
                            for u in T.vectorized(tile):
                                acc[v, u] = acc[v, u] + data[indptr[bn] + j, cc, v] * xt[
                                    indices[indptr[bn] + j] * c + cc, t // nparts * tile + u]
                for v in T.unroll(r):
                    for u in T.vectorized(tile):
                        yt[bn * r + v, t // nparts * tile + u] = act(acc[v, u])

    return token_tiles


def _tokens_kernel(spec: KernelSpec):
    n, k = spec.out_features, spec.in_features
    r, c = spec.block
    nb, tile, nparts = spec.block_rows, spec.tile, spec.parts
    kp = -(-k // c) * c  # K padded to whole block columns (zeros in the workspace)
    dt = spec.dtype
    token_tiles = _token_tiles(spec)
    post = _post_residual(spec)
    sq = TRANSPOSE_TILE

    @T.prim_func
    def kernel(x: T.handle, d: T.handle, ind: T.handle, ptr: T.handle, prt: T.handle,
               bi: T.handle, res: T.handle, y: T.handle):
        T.func_attr({"global_symbol": ENTRY, "tirx.noalias": True, "tirx.is_scheduled": True,
                     "sparsepass.kernel": "bsr_linear.tokens"})
        M = T.int64()
        NNZB = T.int64()
        X = T.match_buffer(x, (M, k), spec.dtype, align=4, offset_factor=1)
        data = T.match_buffer(d, (NNZB, c, r), "float32", align=4)
        indices = T.match_buffer(ind, (NNZB,), "int32", align=4)
        indptr = T.match_buffer(ptr, (nb + 1,), "int32", align=4)
        parts = T.match_buffer(prt, (nparts + 1,), "int32", align=4)
        bias = T.match_buffer(bi, (nb * r,), "float32", align=4)
        R = T.match_buffer(res, (M, n) if spec.residual else (1,), _residual_dtype(spec), align=4,
                           offset_factor=1)
        Y = T.match_buffer(y, (M, n), spec.dtype, align=4, offset_factor=1)
        # Workspaces: X transposed (tokens contiguous, zero-padded) and Y transposed.
        xt = T.alloc_buffer((kp, (M + tile - 1) // tile * tile), "float32")
        yt = T.alloc_buffer((nb * r, (M + tile - 1) // tile * tile), "float32")
        for kb in T.parallel((kp + 15) // 16):
            for m in range((M + tile - 1) // tile * tile):
                for kk in range(16):
                    if kb * 16 + kk < kp:
                        xt[kb * 16 + kk, m] = T.if_then_else(
                            m < M and kb * 16 + kk < k, widen(X[T.min(m, M - 1), T.min(kb * 16 + kk, k - 1)], dt),
                            T.float32(0))
        token_tiles(xt, yt, data, indices, indptr, parts, bias, (M + tile - 1) // tile)
        # Whole 16 x 16 tiles: a strided vector load (gather) per row; scalar edges.
        for mb in T.parallel(M // sq):
            for nt in range(n // sq):
                for mm in range(sq):
                    for nn in T.vectorized(sq):
                        Y[mb * sq + mm, nt * sq + nn] = post(yt[nt * sq + nn, mb * sq + mm], R,
                                                             (mb * sq + mm, nt * sq + nn))
            for mm in range(sq):
                for nn in range(n % sq):
                    Y[mb * sq + mm, n // sq * sq + nn] = post(yt[n // sq * sq + nn, mb * sq + mm], R,
                                                              (mb * sq + mm, n // sq * sq + nn))
        for mm in range(M % sq):
            for col in range(n):
                Y[M // sq * sq + mm, col] = post(yt[col, M // sq * sq + mm], R, (M // sq * sq + mm, col))

    return kernel


def _channels_kernel(spec: KernelSpec):
    """A 1x1 conv in NCHW: per image, X[n] is already [K, HW] and Y[n] is [N_out, HW].

    Tiles of ``tile`` positions read X and write Y in place (no workspace: a copy of X in and of
    Y out cost as much as the multiply-adds of a 20%-dense 1x1 conv with few channels). The
    positions left over run as one tile of as many vectors as they need, its last vector moved
    back to end at the last position (recomputing a few): the small maps of late layers (7x7,
    14x14) fit no whole tile, and one at a time each leftover position cost a pass over the
    weights. Maps narrower than a vector run one position at a time.
    """
    n, k = spec.out_features, spec.in_features
    r, c = spec.block
    nb, tile, nparts = spec.block_rows, spec.tile, spec.parts
    lanes = min(16, tile)
    short_last_row = n % r
    dt = spec.dtype
    finish = finisher(spec)

    def col(kb, cc):
        idx = kb * c + cc
        return T.min(idx, k - 1) if k % c else idx  # a ragged last block column holds zeros past K

    def rows_kept(bn):
        return T.if_then_else(bn == nb - 1, short_last_row, r) if short_last_row else r

    def start(m0, w, width, last):
        # Where vector w of a tile begins: none after ``last`` (None: no clamp, whole tiles).
        return m0 + w * width if last is None else T.min(m0 + w * width, last)

    # A block's rows in groups of at most 32 (32x1 in two groups of 16 ran 0.67-1.2x as fast as in
    # one on Zen 5; 64 rows spill registers and took minutes to compile).
    group = max(d for d in range(1, min(r, 32) + 1) if r % d == 0)
    block_cols = T.unroll if c <= 8 else T.serial  # 64 unrolled columns took minutes to compile

    @T.macro
    def positions(X, data, indices, indptr, bias, R, Y, image, m0, bn, vectors, width, last):
        # ``vectors`` runs of ``width`` positions from m0, for each group of the block's rows.
        for g in T.serial(r // group):
            acc = T.alloc_buffer((group, vectors * width), "float32", scope="local")
            for v in T.unroll(group):
                for u in T.vectorized(vectors * width):
                    acc[v, u] = bias[bn * r + g * group + v]
            for j in range(indptr[bn + 1] - indptr[bn]):
                for cc in block_cols(c):
                    for v in T.unroll(group):
                        for w in T.unroll(vectors):
                            for u in T.vectorized(width):
                                acc[v, w * width + u] = acc[v, w * width + u] + data[
                                    indptr[bn] + j, cc, g * group + v] * widen(X[
                                    image, col(indices[indptr[bn] + j], cc), start(m0, w, width, last) + u], dt)
            for v in T.unroll(group):
                if g * group + v < rows_kept(bn):
                    for w in T.unroll(vectors):
                        for u in T.vectorized(width):
                            Y[image, bn * r + g * group + v, start(m0, w, width, last) + u] = finish(
                                acc[v, w * width + u], R,
                                (image, bn * r + g * group + v, start(m0, w, width, last) + u))

    def leftover_tile(vectors: int):
        """A tile of ``need`` vectors for any need <= ``vectors``: tile widths are static, so one
        branch per width, chained at parse time."""
        fewer = leftover_tile(vectors - 1) if vectors > 1 else None

        @T.macro
        def leftovers(X, data, indices, indptr, bias, R, Y, image, m0, bn, need, last):
            if need == vectors:
                positions(X, data, indices, indptr, bias, R, Y, image, m0, bn, vectors, lanes, last)
            elif fewer is not None:
                fewer(X, data, indices, indptr, bias, R, Y, image, m0, bn, need, last)

        return leftovers

    leftovers = leftover_tile(tile // lanes)

    @T.prim_func
    def kernel(x: T.handle, d: T.handle, ind: T.handle, ptr: T.handle, prt: T.handle,
               bi: T.handle, res: T.handle, y: T.handle):
        T.func_attr({"global_symbol": ENTRY, "tirx.noalias": True, "tirx.is_scheduled": True,
                     "sparsepass.kernel": "bsr_linear.channels"})
        B = T.int64()
        M = T.int64()
        NNZB = T.int64()
        X = T.match_buffer(x, (B, k, M), spec.dtype, align=4, offset_factor=1)
        data = T.match_buffer(d, (NNZB, c, r), "float32", align=4)
        indices = T.match_buffer(ind, (NNZB,), "int32", align=4)
        indptr = T.match_buffer(ptr, (nb + 1,), "int32", align=4)
        parts = T.match_buffer(prt, (nparts + 1,), "int32", align=4)
        bias = T.match_buffer(bi, (nb * r,), "float32", align=4)
        R = T.match_buffer(res, (B, n, M) if spec.residual else (1,), _residual_dtype(spec), align=4,
                           offset_factor=1)
        Y = T.match_buffer(y, (B, n, M), spec.dtype, align=4, offset_factor=1)
        tiles = M // tile
        for t in T.parallel(B * tiles * nparts):
            for q in range(parts[t % nparts + 1] - parts[t % nparts]):
                positions(X, data, indices, indptr, bias, R, Y, t // nparts // tiles,
                          t // nparts % tiles * tile, parts[t % nparts] + q, 1, tile, None)
        if M % tile > 0 and M >= lanes:
            for t in T.parallel(B * nparts):
                for q in range(parts[t % nparts + 1] - parts[t % nparts]):
                    leftovers(X, data, indices, indptr, bias, R, Y, t // nparts, tiles * tile,
                              parts[t % nparts] + q, (M % tile + lanes - 1) // lanes, M - lanes)
        if M < lanes:
            for t in T.parallel(B * M * nparts):
                for q in range(parts[t % nparts + 1] - parts[t % nparts]):
                    positions(X, data, indices, indptr, bias, R, Y, t // nparts // M, t // nparts % M,
                              parts[t % nparts] + q, 1, 1, None)

    return kernel
