"""Relax FoldBatchNorm and SparsifyConv2d: folded like PyTorch, pattern convs equal end to end."""

import pytest
import torch
import torch.nn as nn
import tvm

from sparsepass import frontends, prune
from sparsepass.passes import relax as sp
from sparsepass.testing import assert_equivalent
from sparsepass.testing import strategies as sps
from sparsepass.testing.models import ResNet18, randomize_batchnorm
from sparsepass.testing.relax import call_tir_targets, relax_ops, sparsepass_kernels


def pattern_pruned_conv(c=8, bias=True) -> nn.Conv2d:
    conv = nn.Conv2d(c, c, 3, padding=1, bias=bias)
    with torch.no_grad():
        conv.weight.mul_(torch.from_numpy(sps.pattern_mask(c, c, 4, 4, 0.5, 0)))
    return conv


class ConvBnRelu(nn.Module):
    def __init__(self, c=8, residual=True):
        super().__init__()
        self.conv, self.bn, self.residual = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), residual
        with torch.no_grad():
            self.conv.weight.mul_(torch.from_numpy(sps.pattern_mask(c, c, 4, 4, 0.5, 0)))
        randomize_batchnorm(self)

    def forward(self, x):
        y = self.bn(self.conv(x))
        return torch.relu(y + x if self.residual else y)


def test_fold_batchnorm_removes_it_and_keeps_values(host):
    model = ConvBnRelu().eval()
    x = torch.randn(2, 8, 6, 6)
    mod = sp.FoldBatchNorm()(frontends.to_relax(model, (x,)))
    assert "relax.nn.batch_norm" not in relax_ops(mod)
    assert_equivalent(model, tvm.compile(mod, target=host), [x])


@pytest.mark.parametrize("residual", [False, True])
def test_conv_bn_relu_block_becomes_one_pattern_kernel(host, residual):
    model = ConvBnRelu(residual=residual).eval()
    x = torch.randn(1, 8, 9, 9)
    mod = tvm.transform.Sequential([sp.FoldBatchNorm(), sp.SparsifyConv2d()])(frontends.to_relax(model, (x,)))
    [kernel] = call_tir_targets(mod)
    assert mod[kernel].attrs["sparsepass.kernel"] == "pattern_conv"
    assert sp.report(mod)[0].kernel == "pattern conv" + (" +residual" if residual else "") + " +relu"
    assert not {"relax.nn.conv2d", "relax.nn.relu"} & set(relax_ops(mod))
    assert_equivalent(model, tvm.compile(mod, target=host), [x])


@pytest.mark.slow
def test_pattern_pruned_resnet18_through_the_relax_pipeline(host):
    torch.manual_seed(0)
    model = randomize_batchnorm(ResNet18(num_classes=10, width=16)).eval()
    prune.pattern_prune(model, taps=4, patterns=8, connectivity=0.5)
    x = torch.randn(2, 3, 64, 64)
    mod = frontends.to_relax(model, (x,))
    lowered = sp.pipeline()(mod)
    assert "pattern_conv" in set(sparsepass_kernels(lowered).values())
    # Each conv reported once, by its PyTorch name (through BatchNorm folding and filter reorder).
    convs = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert sorted(layer.name for layer in sp.report(lowered) if layer.op == "relax.nn.conv2d") == sorted(convs)
    assert_equivalent(model, tvm.compile(mod, target=host, relax_pipeline=sp.pipeline()), [x])


class SharedConv(nn.Module):
    """One pattern-pruned conv applied twice (weight sharing, as in a block called in a loop)."""

    def __init__(self, c=8):
        super().__init__()
        self.conv = pattern_pruned_conv(c)

    def forward(self, x):
        y = torch.relu(self.conv(x) + x)
        return torch.relu(self.conv(y) + y), self.conv(y * 2)


def test_a_conv_applied_twice_is_rewritten_at_each_site(host):
    model, x = SharedConv().eval(), torch.randn(1, 8, 9, 9)
    mod = sp.SparsifyConv2d()(frontends.to_relax(model, (x,)))
    assert "relax.nn.conv2d" not in relax_ops(mod) and len(call_tir_targets(mod)) == 3
    executable = tvm.compile(mod, target=host)
    from sparsepass.testing.relax import vm_call

    for actual, expected in zip(vm_call(executable, (x,)), model(x)):
        torch.testing.assert_close(torch.from_numpy(actual.numpy()), expected, rtol=1e-5, atol=1e-5)


def test_every_kernel_left_in_the_module_is_called():
    """A conv rewritten alone before its ReLU and residual are fused leaves no kernel behind."""
    model = ConvBnRelu(residual=True).eval()
    mod = tvm.transform.Sequential([sp.FoldBatchNorm(), sp.SparsifyConv2d()])(
        frontends.to_relax(model, (torch.randn(1, 8, 9, 9),)))
    assert set(sparsepass_kernels(mod)) == set(call_tir_targets(mod))


class ConvPlusRow(nn.Module):
    """A constant added along the width, as many values as there are channels: no bias."""

    def __init__(self, c=8):
        super().__init__()
        self.conv = pattern_pruned_conv(c, bias=False)
        self.register_buffer("row", torch.arange(c, dtype=torch.float32))

    def forward(self, x):
        return torch.relu(self.conv(x) + self.row)


def test_a_constant_broadcast_along_the_width_is_not_fused_as_the_bias(host):
    model, x = ConvPlusRow().eval(), torch.randn(1, 8, 8, 8)  # width 8 = channels 8
    mod = sp.SparsifyConv2d()(frontends.to_relax(model, (x,)))
    assert sp.report(mod)[0].kernel == "pattern conv"  # the add and the ReLU stay outside
    assert_equivalent(model, tvm.compile(mod, target=host), [x])


class ConvOutputUsedTwice(nn.Module):
    def __init__(self, c=8):
        super().__init__()
        self.conv = pattern_pruned_conv(c)

    def forward(self, x):
        y = self.conv(x)
        return torch.relu(y), y * 2


def test_a_conv_whose_output_has_other_users_runs_once(host):
    model, x = ConvOutputUsedTwice().eval(), torch.randn(1, 8, 9, 9)
    mod = sp.SparsifyConv2d()(frontends.to_relax(model, (x,)))
    assert "relax.nn.conv2d" not in relax_ops(mod) and len(call_tir_targets(mod)) == 1
    assert [layer.kernel for layer in sp.report(mod)] == ["pattern conv"]
    executable = tvm.compile(mod, target=host)
    from sparsepass.testing.relax import vm_call

    for actual, expected in zip(vm_call(executable, (x,)), model(x)):
        torch.testing.assert_close(torch.from_numpy(actual.numpy()), expected, rtol=1e-5, atol=1e-5)


class ConvResidualActivation(nn.Module):
    """conv + x, then an activation (a ResNet-50 bottleneck's last 1x1, a MobileNet ReLU6)."""

    def __init__(self, conv: nn.Conv2d, activation: nn.Module):
        super().__init__()
        self.conv, self.activation = conv, activation

    def forward(self, x):
        return self.activation(self.conv(x) + x)


def block_pruned_1x1(c=64) -> nn.Conv2d:
    conv = nn.Conv2d(c, c, 1)
    with torch.no_grad():
        conv.weight.view(c, c).mul_(prune.block_mask(conv.weight.view(c, c), (4, 1), 0.25))
    return conv


@pytest.mark.parametrize("conv, activation, label", [
    (block_pruned_1x1, nn.ReLU6(), "bsr 4x1 channels +residual +relu6"),
    (block_pruned_1x1, nn.GELU(), "bsr 4x1 channels +residual +gelu"),
    (block_pruned_1x1, nn.ReLU(), "bsr 4x1 channels +residual +relu"),
    (lambda: pattern_pruned_conv(16), nn.Hardtanh(0.0, 6.0), "pattern conv +residual +relu6"),
])
def test_residual_and_activation_fuse_into_one_conv_kernel(host, conv, activation, label):
    model = ConvResidualActivation(conv(), activation).eval()
    x = torch.randn(1, model.conv.in_channels, 28, 28)
    mod = sp.SparsifyConv2d()(frontends.to_relax(model, (x,)))
    [kernel] = call_tir_targets(mod)
    assert sp.report(mod)[0].kernel == label
    assert not {"relax.nn.conv2d", "relax.add", "relax.clip", "relax.nn.gelu", "relax.nn.relu"} & set(relax_ops(mod))
    assert_equivalent(model, tvm.compile(mod, target=host), [x])


def test_a_clip_to_other_bounds_stays_after_the_kernel(host):
    model = ConvResidualActivation(block_pruned_1x1(), nn.Hardtanh(-1.0, 1.0)).eval()
    x = torch.randn(1, 64, 28, 28)
    mod = sp.SparsifyConv2d()(frontends.to_relax(model, (x,)))
    assert sp.report(mod)[0].kernel == "bsr 4x1 channels +residual"
    assert "relax.clip" in relax_ops(mod)
    assert_equivalent(model, tvm.compile(mod, target=host), [x])


def test_a_strided_1x1_conv_is_rewritten(host):
    conv = nn.Conv2d(64, 128, 1, stride=2)
    with torch.no_grad():
        conv.weight.view(128, 64).mul_(prune.block_mask(conv.weight.view(128, 64), (4, 1), 0.2))
    model = nn.Sequential(conv, nn.ReLU()).eval()
    x = torch.randn(1, 64, 29, 29)
    mod = sp.SparsifyConv2d()(frontends.to_relax(model, (x,)))
    assert sp.report(mod)[0].kernel == "bsr 4x1 channels +relu"
    assert_equivalent(model, tvm.compile(mod, target=host), [x])


def test_a_half_precision_conv_stays_dense_saying_why():
    from tvm import relax

    weight = pattern_pruned_conv(bias=False).weight.detach().half().numpy()
    builder = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([1, 8, 12, 12], "float16"))
    with builder.function("main", [x]):
        with builder.dataflow():
            out = builder.emit_output(relax.op.nn.conv2d(x, relax.const(weight), padding=1))
        builder.emit_func_output(out)
    after = sp.SparsifyConv2d()(builder.get())
    [layer] = sp.report(after)
    assert call_tir_targets(after) == []
    assert layer.kernel == "dense" and "float16" in layer.reason and "torch.fx" in layer.reason


def test_convs_no_kernel_takes_are_reported_dense_with_their_names(host):
    class OtherConvs(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.ct = nn.Conv1d(8, 16, 3), nn.ConvTranspose2d(4, 4, 3)

        def forward(self, x, image):
            return self.c1(x).sum() + self.ct(image).sum()

    mod = frontends.to_relax(OtherConvs().eval(), (torch.randn(2, 8, 20), torch.randn(1, 4, 8, 8)))
    with host:
        after = tvm.transform.Sequential(sp.sparsepass_passes())(mod)
    layers = {layer.name: layer for layer in sp.report(after)}
    assert layers["c1"].op == "relax.nn.conv1d" and layers["ct"].op == "relax.nn.conv2d_transpose"
    assert all(layer.kernel == "dense" and "2-D convs" in layer.reason for layer in layers.values())
