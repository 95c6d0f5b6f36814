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


@pytest.mark.slow
def test_pruned_resnet50_equals_dense_through_fx_and_relax():
    """3x3 convs pattern-pruned, 1x1 convs 4x1-block-pruned: each bottleneck's last 1x1 (or its
    downsample) takes the residual add and ReLU, the first its ReLU; both paths equal dense."""
    import tvm

    from sparsepass import frontends
    from sparsepass.codegen.target import canonical_target, tvm_target
    from sparsepass.passes import relax as sp
    from sparsepass.testing.models import ResNet50

    torch.manual_seed(0)
    model = randomize_batchnorm(ResNet50(num_classes=10, width=16, depths=(1, 2, 1, 1))).eval()
    prune.pattern_prune(model, taps=4, patterns=8, connectivity=0.5)
    masks = prune.prune_pointwise_convs(model, (4, 1), 0.2, skip=("stem.0",))
    assert len(masks) == 5 * 2 + 4  # two per bottleneck and four downsamples
    x = torch.randn(1, 3, 64, 64)
    always = passes.CostModel(min_speedup=0.0)
    fast = passes.sparsify_graph(fold_batchnorm(fx.symbolic_trace(model)), example_inputs=(x,),
                                 options=passes.SparsifyOptions(cost=always))
    kernels = {layer.name: layer.kernel for layer in fast.sparsepass_report}
    for i in range(5):  # the residual add goes to whichever of its operands' convs comes last
        assert kernels[f"layers.{i}.conv1"] == "bsr 4x1 channels +relu"
        assert kernels[f"layers.{i}.conv2"] == "pattern conv +relu"
        tails = [kernels.get(f"layers.{i}.{conv}") for conv in ("conv3", "downsample.0")]
        assert "bsr 4x1 channels +residual +relu" in tails, tails
    assert_equivalent(model, fast, [x])
    executable = tvm.compile(frontends.to_relax(model, (x,)), target=tvm_target(canonical_target()),
                             relax_pipeline=sp.pipeline())
    assert_equivalent(model, executable, [x])
