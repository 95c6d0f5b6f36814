"""FastNormalizations: last-axis softmax and layer norm run our row kernels and equal PyTorch."""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
import tvm
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsepass import frontends
from sparsepass.codegen.epilogue import EXP_MIN_ARG
from sparsepass.passes import relax as sp
from sparsepass.testing import gamma
from sparsepass.testing.relax import call_tir_targets, run_vm

EPS32 = torch.finfo(torch.float32).eps


class Softmax(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return torch.softmax(x, self.dim)


@settings(max_examples=8)
@given(rows=st.lists(st.integers(1, 5), min_size=1, max_size=3), width=st.integers(1, 70),
       scale=st.floats(0.1, 30), seed=st.integers(0, 2**31 - 1))
def test_softmax_equals_pytorch(rows, width, scale, seed, host):
    x = torch.randn(*rows, width, generator=torch.Generator().manual_seed(seed)) * scale
    mod = sp.FastNormalizations()(frontends.to_relax(Softmax(-1).eval(), (x,)))
    assert any("softmax" in name for name in call_tir_targets(mod))
    actual = run_vm(tvm.compile(mod, target=host), x)
    expected = torch.softmax(x.double(), -1)
    # exp's relative error (2e-7, codegen.epilogue) on each term and the row sum, the float32
    # rounding of the argument x - max (which exp turns into relative error eps/2 |x - max|),
    # the sum's and the divide's rounding; terms below e^EXP_MIN_ARG are clamped up to it.
    argument = (x - x.max(-1, keepdim=True).values).abs().double()
    relative = 2e-7 * 2 + EPS32 / 2 * (argument + argument.max()) + gamma(width) + 2 * EPS32
    bound = relative * expected + math.exp(EXP_MIN_ARG) * (1 + relative)
    assert ((actual.double() - expected).abs() <= bound).all()


def test_softmax_over_another_axis_is_left_alone():
    x = torch.randn(3, 4, 5)
    mod = sp.FastNormalizations()(frontends.to_relax(Softmax(1).eval(), (x,)))
    assert call_tir_targets(mod) == []


@settings(max_examples=8)
@given(rows=st.integers(1, 9), width=st.integers(2, 80), shift=st.floats(-5, 5),
       seed=st.integers(0, 2**31 - 1))
def test_layer_norm_equals_pytorch(rows, width, shift, seed, host):
    generator = torch.Generator().manual_seed(seed)
    norm = nn.LayerNorm(width, eps=1e-6).eval()
    with torch.no_grad():
        norm.weight.copy_(torch.randn(width, generator=generator))
        norm.bias.copy_(torch.randn(width, generator=generator))
    x = torch.randn(rows, width, generator=generator) * 3 + shift
    mod = sp.FastNormalizations()(frontends.to_relax(norm, (x,)))
    assert any("layer_norm" in name for name in call_tir_targets(mod))
    actual = run_vm(tvm.compile(mod, target=host), x)
    expected = F.layer_norm(x.double(), (width,), norm.weight.double(), norm.bias.double(), 1e-6)
    normalized = (expected - norm.bias.double()) / norm.weight.double()
    # Mean and variance are sums of `width` terms; the result is |normalized| scaled by |weight|.
    relative = 4 * gamma(width + 2) + 8 * EPS32
    bound = relative * (normalized.abs() + 1) * norm.weight.double().abs() + EPS32 * expected.abs()
    assert ((actual.double() - expected).abs() <= bound).all()


class TwoLayerNorms(nn.Module):
    """Layer norms of one width with different epsilons (ConvNeXt): two kernels, two symbols."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.LayerNorm(64, eps=1e-6), nn.LayerNorm(64, eps=1e-12)

    def forward(self, x):
        return self.b(self.a(x) * 3)


def test_kernels_that_share_a_name_get_their_own_symbols(host):
    model, x = TwoLayerNorms().eval(), torch.randn(4, 64)
    mod = sp.FastNormalizations()(frontends.to_relax(model, (x,)))
    symbols = [str(f.attrs["global_symbol"]) for _, f in mod.functions_items() if "global_symbol" in f.attrs]
    assert len(symbols) == len(set(symbols)) and len(set(call_tir_targets(mod))) == 2
    torch.testing.assert_close(run_vm(tvm.compile(mod, target=host), x), model(x), rtol=1e-5, atol=1e-5)
