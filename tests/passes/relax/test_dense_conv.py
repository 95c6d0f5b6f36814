"""Relax DenseConv2d: convs kept dense become im2col + our matmul kernel, equal to PyTorch."""

import pytest
import torch
import torch.nn as nn
import tvm

from sparsepass import frontends
from sparsepass.passes import relax as sp
from sparsepass.passes.relax.dense_conv import DenseConv2d
from sparsepass.testing import assert_equivalent
from sparsepass.testing.relax import relax_ops, sparsepass_kernels


class ConvRelu(nn.Module):
    def __init__(self, conv):
        super().__init__()
        self.conv = conv

    def forward(self, x):
        return torch.relu(self.conv(x))


@pytest.mark.parametrize("conv, shape", [
    (nn.Conv2d(3, 16, 7, 2, 3, bias=False), (1, 3, 37, 41)),   # a ResNet stem, odd sizes
    (nn.Conv2d(8, 12, 1, 2), (2, 8, 9, 9)),                      # downsample 1x1 stride 2, batch 2
    (nn.Conv2d(8, 12, 1), (1, 8, 5, 7)),                         # 1x1 stride 1: no im2col
    (nn.Conv2d(5, 6, (3, 2), (1, 2), (1, 0)), (2, 5, 10, 11)),   # uneven window, stride, padding
])
def test_dense_convs_equal_pytorch_through_the_pipeline(host, conv, shape):
    model, x = ConvRelu(conv).eval(), torch.randn(*shape)
    mod = frontends.to_relax(model, (x,))
    rewritten = DenseConv2d()(mod)
    assert "relax.nn.conv2d" not in relax_ops(rewritten) and "relax.matmul" in relax_ops(rewritten)
    assert "dense_matmul" in sparsepass_kernels(sp.pipeline()(mod)).values()
    assert_equivalent(model, tvm.compile(mod, target=host, relax_pipeline=sp.pipeline()), [x])


def test_grouped_conv_is_left_to_tvm_and_stays_correct(host):
    model, x = ConvRelu(nn.Conv2d(8, 8, 3, padding=1, groups=4)).eval(), torch.randn(1, 8, 6, 6)
    mod = frontends.to_relax(model, (x,))
    assert "relax.nn.conv2d" in relax_ops(DenseConv2d()(mod))
    assert_equivalent(model, tvm.compile(mod, target=host, relax_pipeline=sp.pipeline()), [x])
