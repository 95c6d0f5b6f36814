"""Example: a ResNet-18 (defined in sparsepass.testing.models, random weights) pattern-pruned the
PCONV way (4 of 9 taps from 8 patterns, 50% of kernels kept), BatchNorm folded, sparsified,
checked equal to the dense network, and timed.

    python examples/resnet18_pconv.py
"""

from __future__ import annotations

import torch
import torch.fx as fx

from sparsepass import passes, prune
from sparsepass.passes.fx.fold_bn import fold_batchnorm
from sparsepass.testing import assert_equivalent
from sparsepass.testing.models import ResNet18, randomize_batchnorm
from sparsepass.testing.timing import median_ms


@torch.no_grad()
def main() -> None:
    torch.manual_seed(0)
    model = randomize_batchnorm(ResNet18()).eval()
    prune.pattern_prune(model, taps=4, patterns=8, connectivity=0.5)
    x = torch.randn(1, 3, 224, 224)
    folded = fold_batchnorm(fx.symbolic_trace(model))
    fast = passes.sparsify_graph(folded, example_inputs=(x,))
    print(fast.sparsepass_report, end="\n\n")
    assert_equivalent(model, fast, [x])
    print("sparsified ResNet-18 is equivalent to the dense one")
    for threads in sorted({1, torch.get_num_threads()}):
        torch.set_num_threads(threads)
        dense, sparse = median_ms(lambda: model(x), 10), median_ms(lambda: fast(x), 10)
        print(f"{threads} thread(s): PyTorch dense {dense:.1f} ms, sparsepass {sparse:.1f} ms "
              f"({dense / sparse:.2f}x)")


if __name__ == "__main__":
    main()
