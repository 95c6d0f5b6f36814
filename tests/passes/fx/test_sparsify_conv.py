"""Pattern-pruned and 1x1 sparse convs through sparsify_graph: equal to PyTorch, fused, reported."""

import pytest
import torch
import torch.fx as fx
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsepass import SparsifyError, passes, prune
from sparsepass.passes.fx.fold_bn import fold_batchnorm
from sparsepass.testing import assert_equivalent, gamma
from sparsepass.testing import strategies as sps
from sparsepass.testing.epilogues import TORCH_EPILOGUES

ALWAYS = passes.SparsifyOptions(cost=passes.CostModel(min_speedup=0.0))


class ConvBlock(nn.Module):
    """conv [+ BN] [+ x] [+ activation]; ``relu`` is True (ReLU) or an epilogue's name."""

    def __init__(self, conv, bn, relu, residual):
        super().__init__()
        self.conv = conv
        self.bn = nn.BatchNorm2d(conv.out_channels) if bn else None
        keeps_shape = conv.in_channels == conv.out_channels and conv.stride == (1, 1) and (
            conv.kernel_size, conv.padding) in (((3, 3), (1, 1)), ((1, 1), (0, 0)))
        self.activation = TORCH_EPILOGUES["relu" if relu is True else relu or "none"]
        self.residual = residual and keeps_shape

    def forward(self, x):
        y = self.conv(x)
        if self.bn is not None:
            y = self.bn(y)
        if self.residual:
            y = y + x
        return self.activation(y)


def conv_bound(conv: nn.Conv2d, x: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    """Two-implementation rounding bound of a conv: gamma_K times |x| * |W|, plus the adds."""
    magnitude = nn.functional.conv2d(x.abs(), conv.weight.abs(), None, conv.stride, conv.padding)
    k = conv.in_channels * 9 + 2
    return 2 * gamma(k) * magnitude.double() + torch.finfo(torch.float32).eps * (expected.abs().double() + 1)


@settings(max_examples=15)
@given(conv=sps.pruned_conv2ds(max_channels=20), height=st.integers(3, 17), width=st.integers(3, 17),
       batch=st.integers(1, 2), activation=st.sampled_from([None, "relu", "relu6"]), residual=st.booleans(),
       seed=st.integers(0, 99))
def test_pattern_and_1x1_convs_equal_pytorch(conv, height, width, batch, activation, residual, seed):
    """Exact epilogues only (ReLU, ReLU6: 1-Lipschitz, so the conv's rounding bound holds after them)."""
    model = ConvBlock(conv, bn=False, relu=activation, residual=residual).eval()
    x = torch.randn(batch, conv.in_channels, height, width, generator=torch.Generator().manual_seed(seed))
    fast = passes.sparsify_graph(fx.symbolic_trace(model), example_inputs=(x,), options=ALWAYS)
    expected = model(x)
    assert ((fast(x) - expected).abs().double() <= conv_bound(conv, x, expected)
            * (2 if residual else 1)).all()
    layer = fast.sparsepass_report["conv"]
    has_zeros = bool((conv.weight == 0).any())
    supported = conv.kernel_size == (1, 1) or conv.kernel_size == (3, 3)
    if has_zeros and supported and layer.kernel == "dense":
        assert "stays dense" in layer.reason or "no zeros" in layer.reason or "the speed of dense" in layer.reason


def pattern_conv(in_c=16, out_c=16, stride=1, seed=0):
    conv = nn.Conv2d(in_c, out_c, 3, stride=stride, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.mul_(torch.from_numpy(sps.pattern_mask(out_c, in_c, 4, 4, 0.5, seed)))
    return conv


def conv_bn_relu_residual() -> ConvBlock:
    model = ConvBlock(pattern_conv(), bn=True, relu=True, residual=True).eval()
    with torch.no_grad():
        model.bn.running_mean.normal_()
        model.bn.running_var.uniform_(0.5, 2)
    return model


def test_conv_bn_relu_residual_block_is_one_kernel():
    model, x = conv_bn_relu_residual(), torch.randn(1, 16, 10, 10)
    folded = fold_batchnorm(fx.symbolic_trace(model))
    assert folded.sparsepass_folded == 1
    fast = passes.sparsify_graph(folded, example_inputs=(x,))
    assert fast.sparsepass_report["conv"].kernel == "pattern conv +residual +relu"
    calls = [n for n in fast.graph.nodes if n.op in ("call_function", "call_module")]
    assert [n.target for n in calls] == [torch.ops.sparsepass.pattern_conv2d.default]
    assert_equivalent(model, fast, [x])


def test_sparsify_graph_folds_batchnorm_itself_unless_told_not_to():
    model, x = conv_bn_relu_residual(), torch.randn(1, 16, 10, 10)
    fast = passes.sparsify_graph(fx.symbolic_trace(model), example_inputs=(x,))
    assert fast.sparsepass_report["conv"].kernel == "pattern conv +residual +relu"
    assert "1 BatchNorm(s) folded into the conv before them" in fast.sparsepass_report.notes
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    assert_equivalent(model, fast, [x])
    unfolded = passes.sparsify_graph(fx.symbolic_trace(model), example_inputs=(x,),
                                     options=passes.SparsifyOptions(fold_batchnorm=False))
    assert unfolded.sparsepass_report["conv"].kernel == "pattern conv"
    assert any(isinstance(m, nn.BatchNorm2d) for m in unfolded.modules())
    assert_equivalent(model, unfolded, [x])


@pytest.mark.parametrize("kernel_size, activation, label", [
    (1, "relu6", "bsr 4x1 channels +residual +relu6"),
    (1, "silu", "bsr 4x1 channels +residual +silu"),
    (3, "relu6", "pattern conv +residual +relu6"),
    (3, "gelu", "pattern conv +residual +gelu"),
])
def test_residual_and_any_activation_fuse_into_one_conv_kernel(kernel_size, activation, label):
    """ResNet-50's last 1x1 of a bottleneck (+ x, ReLU), MobileNet's ReLU6, EfficientNet's SiLU."""
    if kernel_size == 1:
        conv = nn.Conv2d(16, 16, 1)
        with torch.no_grad():
            conv.weight.view(16, 16).mul_(prune.block_mask(conv.weight.view(16, 16), (4, 1), 0.25))
    else:
        conv = pattern_conv()
    model = ConvBlock(conv, bn=False, relu=activation, residual=True).eval()
    x = torch.randn(1, 16, 10, 10)
    fast = passes.sparsify_graph(fx.symbolic_trace(model), example_inputs=(x,), options=ALWAYS)
    assert fast.sparsepass_report["conv"].kernel == label
    calls = [n for n in fast.graph.nodes if n.op in ("call_function", "call_module")]
    assert len(calls) == 1
    assert_equivalent(model, fast, [x])


def test_without_example_inputs_a_conv_stays_dense_and_says_why():
    fast = passes.sparsify_graph(fx.symbolic_trace(ConvBlock(pattern_conv(), False, False, False).eval()))
    assert "example_inputs" in fast.sparsepass_report["conv"].reason


def test_exported_graph_knows_its_shapes():
    model = ConvBlock(pattern_conv(), bn=False, relu=True, residual=False).eval()
    x = torch.randn(1, 16, 9, 9)
    fast = passes.sparsify_graph(torch.export.export(model, (x,)).module())
    assert fast.sparsepass_report[0].kernel == "pattern conv +relu"
    assert_equivalent(model, fast, [x])


@pytest.mark.parametrize("conv,reason", [
    (nn.Conv2d(8, 8, 3, groups=8, padding=1), "groups=8"),
    (nn.Conv2d(8, 8, 3, dilation=2, padding=2), "dilation"),
    (nn.Conv2d(8, 8, 5, padding=2), "5x5"),
])
def test_unsupported_convs_stay_dense_with_a_reason(conv, reason):
    with torch.no_grad():
        conv.weight.mul_(torch.rand_like(conv.weight) < 0.2)
    x = torch.randn(1, 8, 8, 8)
    model = ConvBlock(conv, False, False, False).eval()
    fast = passes.sparsify_graph(fx.symbolic_trace(model), example_inputs=(x,))
    assert fast.sparsepass_report["conv"].kernel == "dense"
    assert reason in fast.sparsepass_report["conv"].reason


def test_input_of_another_size_is_refused_by_name():
    model = ConvBlock(pattern_conv(), False, False, False).eval()
    fast = passes.sparsify_graph(fx.symbolic_trace(model), example_inputs=(torch.randn(1, 16, 8, 8),))
    with pytest.raises(SparsifyError, match=r"layer conv: input of shape \(1, 16, 9, 9\)"):
        fast(torch.randn(1, 16, 9, 9))


def test_fold_batchnorm_matches_pytorch_fuse():
    from torch.fx.experimental.optimization import fuse

    model = ConvBlock(nn.Conv2d(6, 5, 3, padding=1), bn=True, relu=False, residual=False).eval()
    with torch.no_grad():
        model.bn.running_mean.normal_()
        model.bn.running_var.uniform_(0.5, 2)
        model.bn.weight.normal_()
    ours, theirs = fold_batchnorm(fx.symbolic_trace(model)), fuse(model)
    x = torch.randn(2, 6, 7, 7)
    torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)


@pytest.mark.parametrize("size", [15, 16])
def test_a_strided_1x1_conv_reads_every_other_position(size):
    """ResNet's downsample projections: a 1x1 conv with stride 2, odd and even maps."""
    conv = nn.Conv2d(64, 128, 1, stride=2, bias=False)
    with torch.no_grad():
        conv.weight.view(128, 64).mul_(prune.block_mask(conv.weight.view(128, 64), (4, 1), 0.2))
    model = ConvBlock(conv, bn=False, relu=False, residual=False).eval()
    x = torch.randn(2, 64, size, size)
    fast = passes.sparsify_graph(fx.symbolic_trace(model), example_inputs=(x,), options=ALWAYS)
    assert fast.sparsepass_report["conv"].kernel == "bsr 4x1 channels"
    assert fast(x).shape == model(x).shape
    assert_equivalent(model, fast, [x])


def test_a_fused_residual_of_the_wrong_shape_is_refused_by_name():
    conv = nn.Conv2d(16, 16, 1)
    with torch.no_grad():
        conv.weight.view(16, 16).mul_(prune.block_mask(conv.weight.view(16, 16), (4, 1), 0.25))
    model = ConvBlock(conv, bn=False, relu="relu", residual=True).eval()
    x = torch.randn(1, 16, 10, 10)
    fast = passes.sparsify_graph(fx.symbolic_trace(model), example_inputs=(x,), options=ALWAYS)
    [call] = [n for n in fast.graph.nodes if n.op == "call_function"]
    args = [getattr(fast, a.target) if isinstance(a, fx.Node) and a.op == "get_attr" else a for a in call.args]
    with pytest.raises(SparsifyError, match="layer conv: residual input must have the output's shape"):
        call.target(x, *args[1:6], torch.randn(1, 16, 5, 5), *args[7:])


def test_silu_written_as_x_times_sigmoid_fuses_into_the_conv():
    """EfficientNet's "swish" as older code writes it: recognised as SiLU, then fused."""

    class Swish(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = pattern_conv()

        def forward(self, x):
            y = self.conv(x)
            return y * torch.sigmoid(y)

    model, x = Swish().eval(), torch.randn(1, 16, 10, 10)
    fast = passes.sparsify_graph(fx.symbolic_trace(model), example_inputs=(x,), options=ALWAYS)
    assert fast.sparsepass_report["conv"].kernel == "pattern conv +silu"
    assert any("SiLU formula" in note for note in fast.sparsepass_report.notes)
    assert_equivalent(model, fast, [x])
