"""Block-pruned 1x1 convs (ResNet-50 bottlenecks, MobileNet v2 expansions) on one thread.

Each conv + ReLU is pruned to R x 1 blocks of output channels (4x1 by default) at
a density (0.2 by default) and sparsified. PyTorch dense, ONNX Runtime dense and
sparsepass (the BSR "channels" kernel) are timed side by side, batch 1; the
ideal is the faster dense time x density. The planner's kernel is printed
beside each row.

    python benchmarks/bench_pointwise_conv.py [--repeats N] [--density D] [--block R]
"""

from __future__ import annotations

import argparse

import torch
import torch.fx as fx
import torch.nn as nn
from onnx_runner import ort_runner

from sparsepass import passes
from sparsepass.prune.projections import prune_blocks
from sparsepass.testing import assert_equivalent
from sparsepass.testing.timing import interleaved_median_ms

#: (in channels, out channels, height = width): ResNet-50's 1x1 convs at each stage, then
#: MobileNet v2's expansion and projection at 56x56 and 7x7.
SHAPES = ((64, 256, 56), (256, 64, 56), (128, 512, 28), (512, 128, 28), (256, 1024, 14),
          (1024, 256, 14), (512, 2048, 7), (2048, 512, 7), (24, 144, 56), (144, 24, 56),
          (160, 960, 7), (960, 160, 7))


def pruned_pointwise(cin: int, cout: int, block: tuple[int, int], density: float) -> nn.Module:
    model = nn.Sequential(nn.Conv2d(cin, cout, 1), nn.ReLU()).eval()
    prune_blocks(model[0].weight.data.view(cout, cin), block, density)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--density", type=float, default=0.2)
    parser.add_argument("--block", type=int, default=4, help="rows R of the R x 1 blocks")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    print(f"1x1 conv + ReLU, {args.block}x1 blocks at density {args.density}, batch 1, one thread")
    print(f"{'conv':>18} {'torch ms':>9} {'ort ms':>9} {'sparse ms':>9} {'ideal ms':>9} {'vs torch':>8} "
          f"{'vs ort':>8} {'/ideal':>7}  kernel")
    speedups = []
    for cin, cout, size in SHAPES:
        model = pruned_pointwise(cin, cout, (args.block, 1), args.density)
        x = torch.randn(1, cin, size, size)
        fast = passes.sparsify_graph(fx.symbolic_trace(model), example_inputs=(x,))
        assert_equivalent(model, fast, [x])
        kernel = "; ".join(layer.kernel for layer in fast.sparsepass_report)
        with torch.no_grad():
            dense_ms, ort_ms, sparse_ms = interleaved_median_ms(
                [lambda: model(x), ort_runner(model, x), lambda: fast(x)], args.repeats)
        ideal = min(dense_ms, ort_ms) * args.density
        speedups.append(dense_ms / sparse_ms)
        name = f"{cin}->{cout} {size}x{size}"
        print(f"{name:>18} {dense_ms:9.3f} {ort_ms:9.3f} {sparse_ms:9.3f} {ideal:9.3f} "
              f"{dense_ms / sparse_ms:7.2f}x {ort_ms / sparse_ms:7.2f}x {sparse_ms / ideal:6.2f}x  {kernel}",
              flush=True)
    speedups.sort()
    print(f"median speed-up over PyTorch dense: {speedups[len(speedups) // 2]:.2f}x "
          f"(range {speedups[0]:.2f}-{speedups[-1]:.2f}x)")


if __name__ == "__main__":
    main()
