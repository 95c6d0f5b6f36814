"""A ResNet-18-shaped network, pattern-pruned, equal end to end after BN folding and sparsify."""

import pytest
import torch
import torch.fx as fx

from sparsepass import passes, prune
from sparsepass.passes.fx.fold_bn import fold_batchnorm
from sparsepass.testing import assert_equivalent
from sparsepass.testing.models import ResNet18, randomize_batchnorm


@pytest.mark.slow
def test_pattern_pruned_resnet18_equals_dense():
    torch.manual_seed(0)
    model = randomize_batchnorm(ResNet18(num_classes=10, width=16)).eval()
    prune.pattern_prune(model, taps=4, patterns=8, connectivity=0.5)
    x = torch.randn(2, 3, 64, 64)
    fast = passes.sparsify_graph(fold_batchnorm(fx.symbolic_trace(model)), example_inputs=(x,),
                                 options=passes.SparsifyOptions(cost=passes.CostModel(min_speedup=0.0)))
    report = fast.sparsepass_report
    pattern_layers = [layer for layer in report if layer.kernel.startswith("pattern conv")]
    assert len(pattern_layers) == 16  # every 3x3 conv of the 8 basic blocks
    assert sum("+residual" in layer.kernel for layer in pattern_layers) == 8
    assert_equivalent(model, fast, [x])
