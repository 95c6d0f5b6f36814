"""Pattern-pruned conv blocks (PCONV): two 3x3 convs, 4 of 9 taps, 50% connectivity (density ~0.22).

At 64ch 56x56, 128ch 28x28 and 256ch 14x14, one thread: PyTorch dense, ONNX
Runtime dense, sparsepass, and the ideal (best dense x density), in one run.
Then the effect of ReorderFilters on two threads (balanced vs not), and a whole
ResNet-18 on one thread: sparsify_graph with its max pool left to PyTorch and on
sparsepass's kernel, and the Relax build (``pipeline()``).

    python benchmarks/bench_pattern_conv.py [--repeats N]
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.fx as fx
import torch.nn as nn
import tvm
from onnx_runner import ort_runner

from sparsepass import frontends, passes, prune
from sparsepass.codegen import runtime
from sparsepass.codegen.pattern_conv_cpu import ConvSpec
from sparsepass.codegen.target import canonical_target, tvm_target
from sparsepass.passes import relax as sp
from sparsepass.passes.fx.fold_bn import fold_batchnorm
from sparsepass.passes.fx.reorder_filters import reorder_filters
from sparsepass.testing import assert_equivalent
from sparsepass.testing.models import ResNet18, randomize_batchnorm
from sparsepass.testing.timing import interleaved_median_ms

BLOCKS = ((64, 56), (128, 28), (256, 14))


def block(channels: int) -> nn.Module:
    model = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU()).eval()
    prune.pattern_prune(model, taps=4, patterns=8, connectivity=0.5)
    return model




def skewed_block(channels: int) -> nn.Module:
    """A block whose filters keep from 90% down to 10% of their kernels (first filters heaviest)."""
    model = block(channels)
    with torch.no_grad():
        for conv in (m for m in model.modules() if isinstance(m, nn.Conv2d)):
            keep = torch.rand(channels, channels) < torch.linspace(0.9, 0.1, channels)[:, None]
            conv.weight.mul_(keep[:, :, None, None])
    return model


def reorder_effect(repeats: int) -> None:
    """Two threads: the same sparsified block with and without ReorderFilters.

    The kernel's parallel tasks are (tile, part of the filters). With several tiles a thread's
    share holds every part, so it is balanced whatever the filter order; with one tile (14x14
    maps and smaller) the threads split the filters, and their order decides.
    """
    threads = min(2, len(os.sched_getaffinity(0)))
    torch.set_num_threads(threads)
    print(f"\nfilter reorder, {threads} threads:")
    for channels, size in ((128, 28), (256, 14)):
        spec = ConvSpec.make(in_channels=channels, out_channels=channels, height=size, width=size,
                             stride=1, padding=1, taps=4, target=canonical_target())
        tasks = f"{spec.row_tiles * spec.column_tiles} tiles x {spec.filter_parts} filter parts"
        for name, model in (("pattern_prune as is", block(channels)), ("skewed filters", skewed_block(channels))):
            x = torch.randn(1, channels, size, size)
            plain = passes.sparsify_graph(fx.symbolic_trace(model), example_inputs=(x,))
            reordered_graph = reorder_filters(fx.symbolic_trace(model))
            reordered = passes.sparsify_graph(reordered_graph, example_inputs=(x,))
            assert_equivalent(model, reordered, [x])
            before = max(g.imbalance_before for g in reordered_graph.sparsepass_reorder)
            after = max(g.imbalance_after for g in reordered_graph.sparsepass_reorder if g.permuted)
            plain_ms, reordered_ms = interleaved_median_ms([lambda: plain(x), lambda: reordered(x)],
                                                           5 * repeats)
            print(f"  {channels:>3}ch {size}x{size} ({tasks}), {name:20} heavier half {before:.2f} -> "
                  f"{after:.2f} of the work; {plain_ms:.3f} ms -> {reordered_ms:.3f} ms "
                  f"({plain_ms / reordered_ms:.2f}x)", flush=True)


def resnet18_effect(repeats: int) -> None:
    """One thread: ResNet-18 PCONV-pruned, BN folded; PyTorch dense, sparsified with its
    (ReLU +) max pool left to PyTorch, sparsified whole, and the Relax build."""
    torch.set_num_threads(1)
    runtime.set_tvm_pool_threads(1)  # the Relax build runs on TVM's pool
    torch.manual_seed(0)
    model = randomize_batchnorm(ResNet18()).eval()
    prune.pattern_prune(model, taps=4, patterns=8, connectivity=0.5)
    x = torch.randn(1, 3, 224, 224)
    graph = fold_batchnorm(fx.symbolic_trace(model))
    pool_in_torch = passes.sparsify_graph(graph, example_inputs=(x,),
                                          options=passes.SparsifyOptions(pooling=False))
    whole = passes.sparsify_graph(graph, example_inputs=(x,))
    executable = tvm.compile(frontends.to_relax(model, (x,)), target=tvm_target(canonical_target()),
                             relax_pipeline=sp.pipeline())
    vm, arg = tvm.relax.VirtualMachine(executable, tvm.cpu()), tvm.runtime.tensor(x.numpy())
    for fast in (pool_in_torch, whole, executable):
        assert_equivalent(model, fast, [x])
    dense, torch_pool, our_pool, relax_ms = interleaved_median_ms(
        [lambda: model(x), lambda: pool_in_torch(x), lambda: whole(x), lambda: vm["main"](arg)],
        max(2, repeats // 10), batch=10)
    print(f"\nResNet-18, one thread: PyTorch dense {dense:.1f} ms; sparsify_graph with PyTorch's max pool "
          f"{torch_pool:.1f} ms ({dense / torch_pool:.2f}x), with sparsepass's {our_pool:.1f} ms "
          f"({dense / our_pool:.2f}x); Relax pipeline {relax_ms:.1f} ms ({dense / relax_ms:.2f}x)")


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    print(f"{'block':>14} {'density':>7} {'torch ms':>9} {'ort ms':>8} {'sparse ms':>9} {'ideal ms':>8} "
          f"{'vs torch':>8} {'vs ort':>7} {'/ideal':>7}")
    for channels, size in BLOCKS:
        model = block(channels)
        x = torch.randn(1, channels, size, size)
        fast = passes.sparsify_graph(fx.symbolic_trace(model), example_inputs=(x,))
        assert fast.sparsepass_report.rewritten == 2, str(fast.sparsepass_report)
        assert_equivalent(model, fast, [x])
        weights = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
        density = sum(int((w != 0).sum()) for w in weights) / sum(w.numel() for w in weights)
        # One thread, side by side call by call: a slow spell of the machine hits all three.
        dense, ort, sparse = interleaved_median_ms([lambda: model(x), ort_runner(model, x), lambda: fast(x)],
                                                   args.repeats)
        ideal = min(dense, ort) * density
        print(f"{channels:>5}ch {size:>3}x{size:<3} {density:>7.3f} {dense:>9.3f} {ort:>8.3f} {sparse:>9.3f} "
              f"{ideal:>8.3f} {dense / sparse:>7.2f}x {ort / sparse:>6.2f}x {sparse / ideal:>6.2f}x", flush=True)
    reorder_effect(args.repeats)
    resnet18_effect(args.repeats)


if __name__ == "__main__":
    main()
