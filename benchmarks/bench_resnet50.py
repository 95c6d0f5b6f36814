"""A pruned ResNet-50 (224x224, batch 1): PyTorch and ONNX Runtime dense vs sparsepass.

The 3x3 convs are pattern-pruned (4 of 9 taps from 8 patterns, half of the
kernels removed: density 0.22) and the 1x1 convs pruned to 4x1 blocks at 20%;
the stem and the classifier stay dense. BatchNorm is folded, then
``sparsify_graph`` (fx) and the Relax ``pipeline()`` build run it; both are
checked equal to the dense network before anything is timed. The ideal is the
faster dense time times the pruned convs' density (the dense stem, pool and
classifier counted in full would only lower it).

One thread by default: the four systems are timed side by side in turns. With
``--threads T`` one system at a time (the idle threads of the other pools would
spin and take a core).

    python benchmarks/bench_resnet50.py [--repeats N] [--density D] [--threads T]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.fx as fx
import torch.nn as nn
import tvm
from onnx_runner import ort_runner

from sparsepass import frontends, passes, prune
from sparsepass.codegen import runtime
from sparsepass.codegen.target import canonical_target, tvm_target
from sparsepass.passes import relax as sp
from sparsepass.passes.fx.fold_bn import fold_batchnorm
from sparsepass.testing import assert_equivalent
from sparsepass.testing.models import ResNet50, randomize_batchnorm
from sparsepass.testing.timing import interleaved_median_ms, median_ms


def pruned_resnet50(density: float) -> nn.Module:
    torch.manual_seed(0)
    model = randomize_batchnorm(ResNet50()).eval()
    prune.pattern_prune(model, taps=4, patterns=8, connectivity=0.5)
    prune.prune_pointwise_convs(model, (4, 1), density)
    return model


def conv_density(model: nn.Module) -> float:
    weights = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
    return sum(int((w != 0).sum()) for w in weights) / sum(w.numel() for w in weights)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--density", type=float, default=0.2, help="of the 1x1 convs' 4x1 blocks")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runtime.set_tvm_pool_threads(args.threads)  # the Relax build runs on TVM's pool
    model = pruned_resnet50(args.density)
    x = torch.randn(1, 3, 224, 224)
    start = time.perf_counter()
    fast = passes.sparsify_graph(fold_batchnorm(fx.symbolic_trace(model)), example_inputs=(x,))
    fx_s = time.perf_counter() - start
    start = time.perf_counter()
    executable = tvm.compile(frontends.to_relax(model, (x,)), target=tvm_target(canonical_target()),
                             relax_pipeline=sp.pipeline())
    relax_s = time.perf_counter() - start
    vm, arg = tvm.relax.VirtualMachine(executable, tvm.cpu()), tvm.runtime.tensor(x.numpy())
    for built in (fast, executable):
        assert_equivalent(model, built, [x])
    report = fast.sparsepass_report
    density = conv_density(model)
    with torch.no_grad():
        runs = [lambda: model(x), ort_runner(model, x, args.threads), lambda: fast(x), lambda: vm["main"](arg)]
        dense, ort, fx_ms, relax_ms = interleaved_median_ms(runs, args.repeats, batch=5) if args.threads == 1 \
            else [median_ms(run, 5 * args.repeats) for run in runs]
    ideal = min(dense, ort) * density
    threads = "one thread" if args.threads == 1 else f"{args.threads} threads"
    print(f"ResNet-50, 224x224, batch 1, {threads}; convs at density {density:.3f} "
          f"({report.rewritten} of {len(report)} layers on sparse kernels; build: fx {fx_s:.0f} s, "
          f"Relax {relax_s:.0f} s)")
    print(f"{'path':<28} {'ms':>8} {'vs torch':>9} {'vs ort':>7} {'/ideal':>7}")
    for name, ms in (("PyTorch dense", dense), ("ONNX Runtime dense", ort), ("sparsepass torch.fx", fx_ms),
                     ("sparsepass Relax pipeline", relax_ms)):
        print(f"{name:<28} {ms:8.2f} {dense / ms:8.2f}x {ort / ms:6.2f}x {ms / ideal:6.2f}x")


if __name__ == "__main__":
    main()
