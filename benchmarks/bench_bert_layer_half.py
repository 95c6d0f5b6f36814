"""A whole BERT-base encoder layer in bfloat16, 128 tokens, pruned at 90%: PyTorch vs sparsepass.

What a user with a bfloat16 BERT on a CPU gets: every linear of the layer pruned to the same
blocks (32x32, 16x32 and 32x8 run on AMX tiles where the CPU has AMX, 32x1 on the float32-computing
"rows" kernel), then `sparsify_graph`; attention's own matmuls, softmax and LayerNorm stay
PyTorch's. Side by side in one run (interleaved medians): PyTorch's bfloat16 layer (oneDNN, on
AMX where present), PyTorch's float32 layer, and the sparsified bfloat16 layer; the largest
difference from PyTorch's bfloat16 output is printed next to bfloat16's spacing there.

    python benchmarks/bench_bert_layer_half.py [--repeats N] [--density D] [--threads T]
"""

from __future__ import annotations

import copy
import functools

import torch
from bench_bert_layer import TOKENS, LayerOutput
from layer_bench_args import host_units, parse_layer_bench_args
from transformers import BertConfig
from transformers.models.bert.modeling_bert import BertLayer

from sparsepass import frontends, passes, prune
from sparsepass.testing.timing import interleaved_median_ms

BLOCKS = {"32x32": (32, 32), "16x32": (16, 32), "32x8": (32, 8), "32x1": (32, 1)}


@torch.no_grad()
def main() -> None:
    args = parse_layer_bench_args(__doc__)
    print(f"host half-precision units PyTorch uses: {host_units()}; "
          f"density {args.density}, {args.threads} thread(s), times in ms")
    print(f"{'block':>6} {'torch bf16':>10} {'torch fp32':>10} {'sparse bf16':>11} {'vs bf16':>8} {'vs fp32':>8} "
          f"{'max diff':>9} {'bf16 ulp':>9}  kernels")
    x32 = torch.randn(1, TOKENS, BertConfig().hidden_size)
    x = x32.to(torch.bfloat16)
    for name, block in BLOCKS.items():
        torch.manual_seed(0)
        model32 = LayerOutput(BertLayer(BertConfig()).eval()).eval()
        prune.prune_linears(model32, block, args.density)
        model = copy.deepcopy(model32).to(torch.bfloat16)
        fast = passes.sparsify_graph(frontends.trace(model, (x,)), example_inputs=(x,))
        expected = model(x)
        diff = (fast(x).float() - expected.float()).abs().max().item()
        ulp = torch.finfo(torch.bfloat16).eps * expected.float().abs().max().item()
        kernels = sorted({layer.kernel for layer in fast.sparsepass_report if layer.kernel != "dense"})
        dense_ms, fp32_ms, sparse_ms = interleaved_median_ms(
            [functools.partial(model, x), functools.partial(model32, x32), functools.partial(fast, x)], args.repeats)
        print(f"{name:>6} {dense_ms:>10.3f} {fp32_ms:>10.3f} {sparse_ms:>11.3f} {dense_ms / sparse_ms:>7.2f}x "
              f"{fp32_ms / sparse_ms:>7.2f}x {diff:>9.4f} {ulp:>9.4f}  {', '.join(kernels) or 'all dense'}", flush=True)


if __name__ == "__main__":
    main()
