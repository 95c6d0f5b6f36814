"""BERT-base linear layers, pruned: PyTorch dense vs ONNX Runtime dense vs sparsepass vs ideal.

Workloads (128 tokens, float32): the FFN (768 -> 3072 -> GELU -> 768) and the
four attention projections (Q, K, V, O: 768 -> 768). Each is pruned to a block
shape (32x1, 16x1, 4x4, unstructured 1x1) at a density (0.5, 0.2, 0.1) and run
on one thread and on all cores. Every number comes from this one run; ratios
compare systems measured side by side (on one thread call by call, in turns;
on all cores one system at a time, since idle threads of the other pools spin).
"ideal" is the best dense time times the density. Medians of repeated runs.

    python benchmarks/bench_linear.py [--quick] [--repeats N]
"""

from __future__ import annotations

import argparse
import functools

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from sparsepass import passes, prune
from sparsepass.passes.analysis import detect
from sparsepass.testing.timing import interleaved_median_ms, median_ms

TOKENS = 128
HIDDEN, FFN = 768, 3072
BLOCKS = {"32x1": (32, 1), "16x1": (16, 1), "4x4": (4, 4), "unstructured": (1, 1)}
DENSITIES = (0.5, 0.2, 0.1)


class Ffn(nn.Module):
    def __init__(self):
        super().__init__()
        self.up, self.down = nn.Linear(HIDDEN, FFN), nn.Linear(FFN, HIDDEN)

    def forward(self, x):
        return self.down(F.gelu(self.up(x)))


class Projections(nn.Module):
    def __init__(self):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(HIDDEN, HIDDEN) for _ in range(4))

    def forward(self, x):
        return self.q(x), self.k(x), self.v(x), self.o(x)


WORKLOADS = {"ffn": Ffn, "attn-proj": Projections}


def onnx_session(model: nn.Module, threads: int):
    """An ONNX Runtime session for the model's dense graph (built with the onnx helper API)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    inits, nodes, outputs = [], [], []
    x = "x"
    for i, lin in enumerate(linears):
        inits += [numpy_helper.from_array(lin.weight.detach().numpy().T.copy(), f"w{i}"),
                  numpy_helper.from_array(lin.bias.detach().numpy(), f"b{i}")]
        nodes += [helper.make_node("MatMul", [x, f"w{i}"], [f"m{i}"]),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"y{i}"])]
        if isinstance(model, Ffn) and i == 0:
            nodes.append(helper.make_node("Gelu", ["y0"], ["g0"]))
            x = "g0"
        elif isinstance(model, Ffn):
            outputs.append(f"y{i}")
        else:
            outputs.append(f"y{i}")
    graph = helper.make_graph(
        nodes, "dense", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [TOKENS, HIDDEN])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def pruned(workload: str, block, density: float, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = WORKLOADS[workload]().eval()
    prune.prune_linears(model, block, density)
    return model


def run(args) -> None:
    thread_counts = sorted({1, torch.get_num_threads()})
    x = torch.randn(TOKENS, HIDDEN)
    rows = []
    with torch.no_grad():
        for workload in WORKLOADS:
            for threads in thread_counts:
                torch.set_num_threads(threads)
                dense_model = pruned(workload, (1, 1), 1.0)
                dense = functools.partial(dense_model, x)
                ort = functools.partial(onnx_session(dense_model, threads).run, None, {"x": x.numpy()})
                if threads > 1:
                    # Each system alone: the other pools' idle threads spin and would take a core.
                    torch_ms, ort_ms = median_ms(dense, args.repeats), median_ms(ort, args.repeats)
                    del ort  # ends the session and its threads
                for name, block in BLOCKS.items():
                    for density in DENSITIES if not args.quick else (0.1,):
                        model = pruned(workload, block, density)
                        fast = passes.sparsify_graph(fx.symbolic_trace(model))
                        kernels = sorted({layer.kernel for layer in fast.sparsepass_report})
                        sparse = functools.partial(fast, x)
                        if threads == 1:  # side by side, call by call: a slow spell hits all three
                            torch_ms, ort_ms, sparse_ms = interleaved_median_ms([dense, ort, sparse],
                                                                                args.repeats)
                        else:
                            sparse_ms = median_ms(sparse, args.repeats)
                        ideal = min(torch_ms, ort_ms) * density
                        rows.append((workload, threads, name, density, torch_ms, ort_ms, sparse_ms,
                                     ideal, ", ".join(kernels)))
                        print_row(rows[-1], header=len(rows) == 1)
    print_summary(rows)
    print_analysis_speed()


def print_row(row, header=False) -> None:
    if header:
        print(f"{'workload':10} {'thr':>3} {'block':>12} {'dens':>5} {'torch ms':>9} {'ort ms':>8} "
              f"{'sparse ms':>9} {'ideal ms':>8} {'vs torch':>8} {'vs ort':>7} {'/ideal':>7}  kernels")
    workload, threads, name, density, torch_ms, ort_ms, sparse_ms, ideal, kernels = row
    print(f"{workload:10} {threads:>3} {name:>12} {density:>5.2f} {torch_ms:>9.3f} {ort_ms:>8.3f} "
          f"{sparse_ms:>9.3f} {ideal:>8.3f} {torch_ms / sparse_ms:>7.1f}x {ort_ms / sparse_ms:>6.1f}x "
          f"{sparse_ms / ideal:>6.2f}x  {kernels}", flush=True)


def print_summary(rows) -> None:
    print("\nBERT-base FFN, 32x1 blocks at density 0.1 (DeepSparse, measured earlier on this CPU "
          "family: 0.79 ms on one thread):")
    for workload, threads, name, density, torch_ms, ort_ms, sparse_ms, ideal, _ in rows:
        if workload == "ffn" and name == "32x1" and density == 0.1:
            print(f"  {threads} thread(s): sparsepass {sparse_ms:.3f} ms = {torch_ms / sparse_ms:.1f}x PyTorch "
                  f"dense, {ort_ms / sparse_ms:.1f}x ONNX Runtime dense, {sparse_ms / ideal:.2f}x the ideal")


def print_analysis_speed() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4096, 4096)).astype(np.float32)
    w *= np.repeat(rng.random((128, 4096)) < 0.1, 32, axis=0)
    seconds = median_ms(lambda: detect(w), 5) / 1e3
    print(f"\nanalysis: detect() on a 4096x4096 weight: {seconds:.2f} s (goal < 1 s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="density 0.1 only")
    parser.add_argument("--repeats", type=int, default=30)
    run(parser.parse_args())


if __name__ == "__main__":
    main()
