"""bfloat16 BERT-base linears pruned to blocks of every width the AMX kernel takes, vs PyTorch.

Each of BERT's FFN linears (768 -> 3072 and 3072 -> 768, 128 tokens) pruned to R x C blocks at
one density, converted to bfloat16 and sparsified; PyTorch's bfloat16 dense linear (oneDNN, on
AMX where the CPU has it) and every sparsified one are timed side by side in one run, one thread
by default (interleaved medians; ideal: PyTorch's dense time x the density). 32x1, which the
AMX kernel cannot take, shows the float32-computing "rows" kernel for comparison. The kernel
column says what the planner chose.

    python benchmarks/bench_amx_blocks.py [--repeats N] [--density D] [--threads T]
"""

from __future__ import annotations

import functools

import torch
import torch.fx as fx
from layer_bench_args import host_units, parse_layer_bench_args

from sparsepass import passes, prune
from sparsepass.testing import assert_equivalent
from sparsepass.testing.timing import interleaved_median_ms

SHAPES = ((768, 3072), (3072, 768))  # (in, out): fc1, fc2
BLOCKS = ((32, 32), (32, 16), (32, 8), (32, 4), (32, 2), (16, 32), (16, 16), (16, 8), (32, 1))
TOKENS = 128


def sparsified_linear(in_features: int, out_features: int, block, density: float):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(in_features, out_features)).eval()
    prune.prune_linears(model, block, density)
    model = model.to(torch.bfloat16)
    fast = passes.sparsify_graph(fx.symbolic_trace(model))
    return model, fast, fast.sparsepass_report[0].kernel


@torch.no_grad()
def main() -> None:
    args = parse_layer_bench_args(__doc__)
    print(f"host half-precision units: {host_units()}; density {args.density}, "
          f"{TOKENS} tokens, {args.threads} thread(s), times in us")
    for in_features, out_features in SHAPES:
        x = torch.randn(TOKENS, in_features).bfloat16()
        dense = torch.nn.Linear(in_features, out_features).eval().bfloat16()
        calls, rows = [functools.partial(dense, x)], []
        for block in BLOCKS:
            model, fast, kernel = sparsified_linear(in_features, out_features, block, args.density)
            assert_equivalent(model, fast, [x])
            calls.append(functools.partial(fast, x))
            rows.append((block, kernel))
        times = interleaved_median_ms(calls, args.repeats)
        print(f"{in_features} -> {out_features}: torch bf16 dense {times[0] * 1e3:.0f}, "
              f"ideal (dense x density) {times[0] * args.density * 1e3:.0f}")
        print(f"{'block':>6} {'sparse':>7} {'vs dense':>8}  kernel")
        for (block, kernel), ms in zip(rows, times[1:]):
            print(f"{block[0]:>3}x{block[1]:<2} {ms * 1e3:>7.0f} {times[0] / ms:>7.2f}x  {kernel}")


if __name__ == "__main__":
    main()
