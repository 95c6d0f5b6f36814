"""Structured sparsity and epilogue fusion, one thread, ratios from one run.

1. ResNet-18 (224x224) with 50% of the filters of each block's first conv removed (zero
   filters, BatchNorm shift zero): sparsify_graph with channel compaction vs PyTorch dense.
2. BERT-base FFN (768 -> 3072 -> GELU -> 768, 128 tokens, 32x1 blocks at 10%): the first BSR
   kernel with GELU fused into its store vs the same kernels with GELU run by PyTorch.

    python benchmarks/bench_structured.py [--repeats N]
"""

from __future__ import annotations

import argparse

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from sparsepass import passes, prune
from sparsepass.testing import assert_equivalent
from sparsepass.testing.models import ResNet18, randomize_batchnorm, remove_half_block_filters
from sparsepass.testing.timing import interleaved_median_ms


def half_filters_removed() -> nn.Module:
    torch.manual_seed(0)
    return remove_half_block_filters(randomize_batchnorm(ResNet18()).eval())


class Ffn(nn.Module):
    def __init__(self):
        super().__init__()
        self.up, self.down = nn.Linear(768, 3072), nn.Linear(3072, 768)

    def forward(self, x):
        return self.down(F.gelu(self.up(x)))


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)

    model = half_filters_removed()
    x = torch.randn(1, 3, 224, 224)
    compacted = passes.sparsify_graph(fx.symbolic_trace(model), example_inputs=(x,),
                                      options=passes.SparsifyOptions(compact=True))
    assert_equivalent(model, compacted, [x])
    before = sum(p.numel() for p in model.parameters())
    after = sum(p.numel() for p in compacted.parameters())
    dense_ms, compact_ms = interleaved_median_ms([lambda: model(x), lambda: compacted(x)], args.repeats)
    print(f"ResNet-18, 50% of block filters removed: parameters {before} -> {after}; "
          f"PyTorch dense {dense_ms:.1f} ms, compacted {compact_ms:.1f} ms ({dense_ms / compact_ms:.2f}x)")

    ffn = Ffn().eval()
    prune.prune_linears(ffn, (32, 1), 0.1)
    t = torch.randn(128, 768)
    fused = passes.sparsify_graph(fx.symbolic_trace(ffn))
    unfused = passes.sparsify_graph(fx.symbolic_trace(ffn), options=passes.SparsifyOptions(fuse_activations=False))
    assert fused.sparsepass_report["up"].kernel.endswith("+gelu")
    fused_ms, unfused_ms = interleaved_median_ms([lambda: fused(t), lambda: unfused(t)], args.repeats * 5)
    print(f"BERT FFN 32x1 @10%: GELU unfused {unfused_ms:.3f} ms, fused into the BSR kernel {fused_ms:.3f} ms "
          f"({unfused_ms / fused_ms:.2f}x)")


if __name__ == "__main__":
    main()
