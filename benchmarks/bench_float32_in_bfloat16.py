"""A float32 BERT-base FFN under PyTorch's bf16 matmul precision: AMX kernels vs PyTorch.

``torch.set_float32_matmul_precision("medium")`` (on CPUs: ``torch.backends.mkldnn.matmul.
fp32_precision = "bf16"``) lets PyTorch's float32 linears multiply in bfloat16 on AMX; a model
sparsified under it gets the AMX kernel for its float32 layers (bfloat16 products, float32 sums,
float32 in and out). The FFN (768 -> 3072 -> GELU -> 768, 128 tokens) is pruned to R x C blocks
at one density and timed side by side, one thread by default (interleaved medians), as:
PyTorch dense at full precision and under "bf16", ONNX Runtime dense (float32: its CPU provider
has no bfloat16 mode), sparsepass exact (float32 kernels, ``float32_precision="ieee"``) and
sparsepass under "bf16"; ideal is the fastest dense time times the density. Each sparse result
is checked against PyTorch under the same precision first. Needs a CPU with AMX.

    python benchmarks/bench_float32_in_bfloat16.py [--repeats N] [--density D] [--threads T]
"""

from __future__ import annotations

import functools

import torch
import torch.fx as fx
import torch.nn as nn
from layer_bench_args import parse_layer_bench_args
from onnx_runner import ort_runner

from sparsepass import passes, prune
from sparsepass.codegen.target import canonical_target, half_precision_features
from sparsepass.testing import assert_equivalent, float32_matmul_precision
from sparsepass.testing.timing import interleaved_median_ms

BLOCKS = ((32, 32), (32, 16), (32, 8), (32, 1))
TOKENS = 128


def under(precision: str, fn):
    def call():
        with float32_matmul_precision(precision):
            return fn()
    return call


def ffn(block, density: float) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(768, 3072), nn.GELU(), nn.Linear(3072, 768)).eval()
    prune.prune_linears(model, block, density)
    return model


@torch.no_grad()
def main() -> None:
    args = parse_layer_bench_args(__doc__)
    if "amx-bf16" not in half_precision_features(canonical_target()):
        raise SystemExit("this CPU has no AMX: float32 layers would stay on the exact kernels")
    x = torch.randn(TOKENS, 768)
    print(f"BERT-base FFN, float32, {TOKENS} tokens, density {args.density}, {args.threads} thread(s), "
          "times in ms; vs: the dense time over ours (under the same precision for PyTorch)")
    print(f"{'block':>6} {'torch':>7} {'torch bf16':>10} {'ort':>7} {'ours':>7} {'ours bf16':>9} {'ideal':>7} "
          f"{'vs torch bf16':>13} {'vs torch':>8} {'vs ort':>7} {'/ideal':>7}  kernels (bf16)")
    for block in BLOCKS:
        model = ffn(block, args.density)
        exact = passes.sparsify_graph(fx.symbolic_trace(model),
                                      options=passes.SparsifyOptions(float32_precision="ieee"))
        fast = passes.sparsify_graph(fx.symbolic_trace(model),
                                     options=passes.SparsifyOptions(float32_precision="bf16"))
        assert_equivalent(model, exact, [x])
        with float32_matmul_precision("bf16"):
            assert_equivalent(model, fast, [x])
        calls = [under("none", functools.partial(model, x)), under("bf16", functools.partial(model, x)),
                 ort_runner(model, x, args.threads),
                 under("none", functools.partial(exact, x)), under("bf16", functools.partial(fast, x))]
        torch_ms, torch_bf16_ms, ort_ms, ours_ms, ours_bf16_ms = interleaved_median_ms(calls, args.repeats)
        ideal_ms = min(torch_ms, torch_bf16_ms, ort_ms) * args.density
        kernels = ", ".join(layer.kernel for layer in fast.sparsepass_report)
        print(f"{block[0]:>3}x{block[1]:<2} {torch_ms:>7.3f} {torch_bf16_ms:>10.3f} {ort_ms:>7.3f} {ours_ms:>7.3f} "
              f"{ours_bf16_ms:>9.3f} {ideal_ms:>7.3f} {torch_bf16_ms / ours_bf16_ms:>12.1f}x "
              f"{torch_ms / ours_bf16_ms:>7.1f}x {ort_ms / ours_bf16_ms:>6.1f}x {ours_bf16_ms / ideal_ms:>6.2f}x  "
              f"{kernels}", flush=True)


if __name__ == "__main__":
    main()
