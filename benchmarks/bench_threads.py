"""Mixed graphs (PyTorch ops and sparsepass kernels) on one and two threads: the kernels'
parallel loops on PyTorch's OpenMP threads (the default) vs on TVM's own pool.

1. ResNet-18 (224x224), PCONV-pruned (4 of 9 taps, 50% connectivity), BN folded: dense stem,
   pooling and downsample convs in PyTorch, 3x3 pattern convs in sparsepass.
2. A BERT-base encoder layer (128 tokens), linears pruned to 32x1 blocks at 10%: attention
   matmuls, softmax and LayerNorm in PyTorch, the linears in sparsepass.

Both pools run the same compiled kernels in one process (``openmp_launcher.use_openmp``
switches them), timed in turns with PyTorch dense, so ratios are side by side.

    python benchmarks/bench_threads.py [--repeats N]
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.fx as fx
from bench_bert_layer import LayerOutput
from transformers import BertConfig
from transformers.models.bert.modeling_bert import BertLayer

from sparsepass import frontends, passes, prune
from sparsepass.codegen import openmp_launcher
from sparsepass.passes.fx.fold_bn import fold_batchnorm
from sparsepass.testing import assert_equivalent
from sparsepass.testing.models import ResNet18, randomize_batchnorm
from sparsepass.testing.timing import interleaved_median_ms


def resnet18() -> tuple[torch.nn.Module, torch.Tensor, torch.nn.Module]:
    model = randomize_batchnorm(ResNet18()).eval()
    prune.pattern_prune(model, taps=4, patterns=8, connectivity=0.5)
    x = torch.randn(1, 3, 224, 224)
    return model, x, passes.sparsify_graph(fold_batchnorm(fx.symbolic_trace(model)), example_inputs=(x,))


def bert_layer() -> tuple[torch.nn.Module, torch.Tensor, torch.nn.Module]:
    model = LayerOutput(BertLayer(BertConfig()).eval()).eval()
    prune.prune_linears(model, block=(32, 1), density=0.1)
    x = torch.randn(1, 128, 768)
    return model, x, passes.sparsify_graph(frontends.trace(model, (x,)), example_inputs=(x,))


def on_pool(fast, x, openmp: bool):
    def call():
        openmp_launcher.use_openmp(openmp)
        return fast(x)
    return call


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=6)
    args = parser.parse_args()
    if openmp_launcher.unavailable_reason():
        raise SystemExit(f"the OpenMP launcher is unavailable: {openmp_launcher.unavailable_reason()}")
    cores = len(os.sched_getaffinity(0))
    print(f"{'model':12} {'thr':>3} {'dense ms':>9} {'tvm pool ms':>11} {'openmp ms':>9} "
          f"{'tvm pool':>8} {'openmp':>7}")
    for name, make, batch in (("ResNet-18", resnet18, 10), ("BERT layer", bert_layer, 25)):
        torch.manual_seed(0)
        model, x, fast = make()
        for threads in sorted({1, min(2, cores)}):
            torch.set_num_threads(threads)
            assert_equivalent(model, fast, [x])
            dense, tvm_pool, openmp = interleaved_median_ms(
                [lambda: model(x), on_pool(fast, x, False), on_pool(fast, x, True)],
                args.repeats, batch=batch)
            print(f"{name:12} {threads:>3} {dense:>9.2f} {tvm_pool:>11.2f} {openmp:>9.2f} "
                  f"{dense / tvm_pool:>7.2f}x {dense / openmp:>6.2f}x", flush=True)
    openmp_launcher.use_openmp(True)


if __name__ == "__main__":
    main()
