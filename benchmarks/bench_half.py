"""BERT-base FFN run in bfloat16 and float16, pruned: PyTorch dense in that dtype vs sparsepass.

The FFN (768 -> 3072 -> GELU -> 768, 128 tokens) pruned to 32x1, 16x1, 4x4 or unstructured at
densities 0.5, 0.2 and 0.1, then converted to the dtype; bfloat16 also with 32x32 and 16x32 blocks,
which run on AMX tiles where the CPU has AMX (the "amx" kernels). One thread; the systems are timed side by side in
turns (interleaved medians), all in this one run:

- torch half: PyTorch's dense layers in the dtype (oneDNN; AMX or AVX-512 BF16 where the CPU has
  them, which is what a half-precision sparse kernel has to beat);
- torch fp32: PyTorch's dense float32 layers, for scale;
- sparse half: ``sparsify_graph`` on the half model, with its planner's choices (a layer it
  expects to lose stays dense: the kernels column says so);
- measured: the same with ``SparsifyOptions(measure=True)``: each layer the planner would
  rewrite is timed against PyTorch first and kept dense unless it wins here;
- sparse fp32: the same pruned model in float32, so ``half/fp32`` is what reading and writing
  half-precision activations costs the kernels (they compute in float32).

    python benchmarks/bench_half.py [--quick] [--repeats N] [--dtype bfloat16|float16]
"""

from __future__ import annotations

import argparse
import copy
import functools

import torch
import torch.fx as fx
from bench_linear import BLOCKS, DENSITIES, HIDDEN, TOKENS, pruned
from layer_bench_args import host_units

from sparsepass import passes
from sparsepass.testing.timing import interleaved_median_ms

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}
#: Blocks at least 2 columns wide, which bfloat16 runs on AMX tiles where the CPU has them.
AMX_BLOCKS = {"32x32": (32, 32), "16x32": (16, 32), "32x8": (32, 8), "32x4": (32, 4)}


def sparsified(model: torch.nn.Module, x: torch.Tensor, measure: bool = False):
    fast = passes.sparsify_graph(fx.symbolic_trace(model), example_inputs=(x,),
                                 options=passes.SparsifyOptions(measure=measure))
    return fast, " / ".join(layer.kernel.replace("bsr ", "") for layer in fast.sparsepass_report)


def run(args) -> None:
    torch.set_num_threads(1)
    print(f"host half-precision units PyTorch uses: {host_units()}")
    print(f"{'dtype':9} {'block':>12} {'dens':>5} {'torch half':>10} {'torch fp32':>10} {'sparse half':>11} "
          f"{'measured':>9} {'sparse fp32':>11} {'vs half':>8} {'measured':>8} {'half/fp32':>9}  "
          "kernels (planner | measured)")
    x32 = torch.randn(TOKENS, HIDDEN)
    with torch.no_grad():
        for name in args.dtype:
            dtype = DTYPES[name]
            x = x32.to(dtype)
            blocks = {**BLOCKS, **AMX_BLOCKS} if name == "bfloat16" else BLOCKS
            for block_name, block in blocks.items():
                if args.blocks and block_name not in args.blocks:
                    continue
                for density in DENSITIES if not args.quick else (0.1,):
                    model32 = pruned("ffn", block, density)
                    model = copy.deepcopy(model32).to(dtype)
                    fast, kernels = sparsified(model, x)
                    checked, checked_kernels = sparsified(model, x, measure=True)
                    fast32, _ = sparsified(model32, x32)
                    times = interleaved_median_ms([functools.partial(model, x), functools.partial(model32, x32),
                                                   functools.partial(fast, x), functools.partial(checked, x),
                                                   functools.partial(fast32, x32)], args.repeats)
                    half_ms, fp32_ms, sparse_ms, checked_ms, sparse32_ms = times
                    print(f"{name:9} {block_name:>12} {density:>5.2f} {half_ms:>10.3f} {fp32_ms:>10.3f} "
                          f"{sparse_ms:>11.3f} {checked_ms:>9.3f} {sparse32_ms:>11.3f} {half_ms / sparse_ms:>7.2f}x "
                          f"{half_ms / checked_ms:>7.2f}x {sparse_ms / sparse32_ms:>8.2f}x  "
                          f"{kernels} | {checked_kernels}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="density 0.1 only")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--dtype", nargs="+", choices=list(DTYPES), default=list(DTYPES))
    parser.add_argument("--blocks", nargs="+", choices=[*BLOCKS, *AMX_BLOCKS], help="these blocks only")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
