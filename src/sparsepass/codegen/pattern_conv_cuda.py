"""The pattern conv (PCONV) kernel for NVIDIA GPUs, and its CPU emulation.

One thread block per (image, filter, tile of output rows); threadIdx.x runs
over output columns and threadIdx.y over the tile's rows, one output each.
A kept kernel's taps are stored as their index ``dy * 3 + dx`` (the CPU
kernel's padded-plane offsets do not apply: no padded copy is made here) and
loads are bounds-checked. `generate_emulated` builds the same macros into a
CPU kernel with the thread axes as loops (there is no barrier), which the
tests check against PyTorch; `generate` is compiled by nvcc in CI.
"""

from __future__ import annotations

from sparsepass.codegen.epilogue import epilogue_fn
from sparsepass.codegen.pattern_conv_cpu import ConvSpec
from sparsepass.codegen.tvm_api import T, tirx

ENTRY = "pattern_conv_cuda"
THREADS_X = 32
THREADS_Y = 8


def tap_index(dy: int, dx: int) -> int:
    """How this kernel stores a tap (ConvSpec.tap_offset for CUDA targets)."""
    return dy * 3 + dx


def _parts(spec: ConvSpec):
    c_in, c_out, h, w = spec.in_channels, spec.out_channels, spec.height, spec.width
    s, p, k = spec.stride, spec.padding, spec.taps
    oh, ow = spec.out_height, spec.out_width
    act = epilogue_fn(spec.epilogue)

    def load(X, n, c, row, col, tap):
        iy, ix = row * s + tap // 3 - p, col * s + tap % 3 - p
        inside = tirx.all(iy >= 0, iy < h, ix >= 0, ix < w)
        return T.if_then_else(inside, X[n, c, T.min(T.max(iy, 0), h - 1), T.min(T.max(ix, 0), w - 1)],
                              T.float32(0))

    def finish(value, R, n, o, row, col):
        return act(value + R[n, o, row, col] if spec.residual else value)

    @T.macro
    def output(X, taps, wts, cols, ranges, bias, R, Y, n, o, row, col):
        if row < oh and col < ow:
            acc = T.alloc_buffer((1,), "float32", scope="local")
            acc[0] = bias[o]
            for j in range(ranges[o, 1] - ranges[o, 0]):
                for t in T.unroll(k):
                    acc[0] = acc[0] + wts[ranges[o, 0] + j, t] * load(
                        X, n, cols[ranges[o, 0] + j], row, col, taps[ranges[o, 0] + j, t])
            Y[n, o, row, col] = finish(acc[0], R, n, o, row, col)

    shapes = dict(c_in=c_in, c_out=c_out, h=h, w=w, k=k, oh=oh, ow=ow,
                  residual=None if spec.residual else (1,))
    return output, shapes


def _tiles(spec: ConvSpec) -> tuple[int, int]:
    return -(-spec.out_width // THREADS_X), -(-spec.out_height // THREADS_Y)


def generate(spec: ConvSpec):
    output, sh = _parts(spec)
    col_tiles, row_tiles = _tiles(spec)
    c_in, c_out, h, w, k, oh, ow = (sh[key] for key in ("c_in", "c_out", "h", "w", "k", "oh", "ow"))

    @T.prim_func
    def kernel(x: T.handle, tp: T.handle, wt: T.handle, col: T.handle, ptr: T.handle, bi: T.handle,
               res: T.handle, y: T.handle):
        T.func_attr({"global_symbol": ENTRY, "tirx.noalias": True, "tirx.is_scheduled": True,
                     "sparsepass.kernel": "pattern_conv.cuda"})
        N = T.int64()
        NNZ = T.int64()
        X = T.match_buffer(x, (N, c_in, h, w), "float32", align=4, offset_factor=1)
        taps = T.match_buffer(tp, (NNZ, k), "int32", align=4)
        wts = T.match_buffer(wt, (NNZ, k), "float32", align=4)
        cols = T.match_buffer(col, (NNZ,), "int32", align=4)
        ranges = T.match_buffer(ptr, (c_out, 2), "int32", align=4)  # one channel block
        bias = T.match_buffer(bi, (c_out,), "float32", align=4)
        R = T.match_buffer(res, sh["residual"] or (N, c_out, oh, ow), "float32", align=4, offset_factor=1)
        Y = T.match_buffer(y, (N, c_out, oh, ow), "float32", align=4, offset_factor=1)
        bx = T.launch_thread("blockIdx.x", N * c_out)
        by = T.launch_thread("blockIdx.y", row_tiles * col_tiles)
        tx = T.launch_thread("threadIdx.x", THREADS_X)
        ty = T.launch_thread("threadIdx.y", THREADS_Y)
        output(X, taps, wts, cols, ranges, bias, R, Y, bx // c_out, bx % c_out,
               by // col_tiles * THREADS_Y + ty, by % col_tiles * THREADS_X + tx)

    return kernel


def generate_emulated(spec: ConvSpec):
    output, sh = _parts(spec)
    col_tiles, row_tiles = _tiles(spec)
    c_in, c_out, h, w, k, oh, ow = (sh[key] for key in ("c_in", "c_out", "h", "w", "k", "oh", "ow"))

    @T.prim_func
    def kernel(x: T.handle, tp: T.handle, wt: T.handle, col: T.handle, ptr: T.handle, bi: T.handle,
               res: T.handle, y: T.handle):
        T.func_attr({"global_symbol": ENTRY, "tirx.noalias": True})
        N = T.int64()
        NNZ = T.int64()
        X = T.match_buffer(x, (N, c_in, h, w), "float32", align=4, offset_factor=1)
        taps = T.match_buffer(tp, (NNZ, k), "int32", align=4)
        wts = T.match_buffer(wt, (NNZ, k), "float32", align=4)
        cols = T.match_buffer(col, (NNZ,), "int32", align=4)
        ranges = T.match_buffer(ptr, (c_out, 2), "int32", align=4)  # one channel block
        bias = T.match_buffer(bi, (c_out,), "float32", align=4)
        R = T.match_buffer(res, sh["residual"] or (N, c_out, oh, ow), "float32", align=4, offset_factor=1)
        Y = T.match_buffer(y, (N, c_out, oh, ow), "float32", align=4, offset_factor=1)
        for bx, by, ty, tx in T.grid(N * c_out, row_tiles * col_tiles, THREADS_Y, THREADS_X):
            output(X, taps, wts, cols, ranges, bias, R, Y, bx // c_out, bx % c_out,
                   by // col_tiles * THREADS_Y + ty, by % col_tiles * THREADS_X + tx)

    return kernel
