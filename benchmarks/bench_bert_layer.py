"""A whole BERT-base encoder layer, 128 tokens, pruned 32x1 at 90%: every path in one run.

PyTorch dense, ONNX Runtime dense, TVM's default build of the module (no
schedules), sparsepass through torch.fx (`sparsify_graph`) and through Relax
(`tvm.compile(..., relax_pipeline=pipeline())`), one thread by default. Ratios
are measured side by side; medians of repeated runs.

    python benchmarks/bench_bert_layer.py [--repeats N] [--density D] [--threads T]
"""

from __future__ import annotations

import time

import torch
import tvm
from layer_bench_args import parse_layer_bench_args
from onnx_runner import ort_runner
from relax_runner import build_with_sparsepass, relax_runner
from transformers import BertConfig
from transformers.models.bert.modeling_bert import BertLayer

from sparsepass import frontends, passes, prune
from sparsepass.codegen import runtime
from sparsepass.codegen.target import canonical_target, tvm_target
from sparsepass.testing import output_tolerance
from sparsepass.testing.timing import interleaved_median_ms, median_ms

TOKENS = 128


class LayerOutput(torch.nn.Module):
    """BertLayer returning a plain tensor (for ONNX and Relax import)."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        out = self.layer(x)
        return out[0] if isinstance(out, tuple) else out



@torch.no_grad()
def main() -> None:
    args = parse_layer_bench_args(__doc__)
    runtime.set_tvm_pool_threads(args.threads)  # the Relax build runs on TVM's pool
    config = BertConfig()
    model = LayerOutput(BertLayer(config).eval()).eval()
    prune.prune_linears(model, (32, 1), args.density)
    x = torch.randn(1, TOKENS, config.hidden_size)
    expected = model(x)
    target = tvm_target(canonical_target())

    fx = passes.sparsify_graph(frontends.trace(model, (x,)), example_inputs=(x,))
    mod = frontends.to_relax(model, (x,))
    start = time.perf_counter()
    sparse_exe = build_with_sparsepass(mod)
    build_s = time.perf_counter() - start
    sparse_run, sparse_out = relax_runner(sparse_exe, x)
    default_run, _ = relax_runner(tvm.compile(mod, target=target), x)

    tolerance = output_tolerance(expected, config.intermediate_size)
    for name, out in (("fx", fx(x)), ("relax", sparse_out())):
        error = float((out - expected).abs().max())
        assert error <= tolerance, f"{name} path differs from dense: {error} > {tolerance}"

    # One thread: side by side call by call (the default build, at seconds a call, apart). More
    # threads: one system at a time, since the idle threads of the other pools would spin.
    names = ["PyTorch dense", "ONNX Runtime dense", "sparsepass torch.fx", "sparsepass Relax pipeline"]
    runs = [lambda: model(x), ort_runner(model, x, args.threads), lambda: fx(x), sparse_run]
    times = interleaved_median_ms(runs, args.repeats) if args.threads == 1 else \
        [median_ms(run, 25 * args.repeats) for run in runs]
    results = dict(zip(names, times))
    results["TVM default build (dense, unscheduled)"] = median_ms(default_run, 3)
    relax_ms = results["sparsepass Relax pipeline"]
    print(f"BERT-base encoder layer, {TOKENS} tokens, 32x1 blocks at density {args.density}, "
          f"{args.threads} thread(s) "
          f"(Relax build {build_s:.1f} s; outputs equal within {tolerance:.1e})")
    print(f"{'path':42} {'ms':>9} {'Relax is':>10}")
    for name, ms in results.items():
        print(f"{name:42} {ms:>9.3f} {ms / relax_ms:>9.2f}x")
    print(f"\nRelax vs fx path: {relax_ms / results['sparsepass torch.fx']:.2f}x the fx time "
          f"(goal <= 1.10); vs ONNX Runtime dense: {results['ONNX Runtime dense'] / relax_ms:.1f}x faster "
          "(goal >= 4)")


if __name__ == "__main__":
    main()
