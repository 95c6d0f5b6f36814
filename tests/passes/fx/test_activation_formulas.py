"""Written-out activations become one call: the tanh-GELU formula one gelu(approximate="tanh"),
x * sigmoid(x) one silu; other formulas stay as written."""

import math

import pytest
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from sparsepass.passes.fx.gelu_tanh import recognise_tanh_gelu
from sparsepass.passes.fx.silu_formula import recognise_silu

C = math.sqrt(2.0 / math.pi)


class Formula(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


FORMULAS = {
    "hugging face": lambda x: 0.5 * x * (1.0 + torch.tanh(C * (x + 0.044715 * torch.pow(x, 3.0)))),
    "operands swapped": lambda x: (torch.tanh((0.044715 * x ** 3 + x) * C) + 1.0) * (x * 0.5),
}


def gelu_calls(gm):
    return [n for n in gm.graph.nodes if n.op == "call_function" and n.target in (F.gelu, torch.ops.aten.gelu.default)]


@pytest.mark.parametrize("form", sorted(FORMULAS))
@pytest.mark.parametrize("level", ["symbolic", "aten"])
def test_formula_becomes_one_gelu_with_the_same_values(form, level):
    model = Formula(FORMULAS[form]).eval()
    x = torch.randn(4, 33) * 4
    gm = fx.symbolic_trace(model) if level == "symbolic" else torch.export.export(model, (x,)).module()
    assert recognise_tanh_gelu(gm) == 1
    [gelu] = gelu_calls(gm)
    assert gelu.kwargs == {"approximate": "tanh"}
    assert not any(n.target in (torch.tanh, torch.ops.aten.tanh.default) for n in gm.graph.nodes)
    torch.testing.assert_close(gm(x), model(x), rtol=4e-6, atol=1e-6)


def test_other_formulas_are_left_alone():
    wrong_constant = Formula(lambda x: 0.5 * x * (1.0 + torch.tanh(0.8 * (x + 0.044715 * torch.pow(x, 3.0)))))
    gm = fx.symbolic_trace(wrong_constant)
    assert recognise_tanh_gelu(gm) == 0 and not gelu_calls(gm)

    def reused(x):
        inner = C * (x + 0.044715 * torch.pow(x, 3.0))
        return 0.5 * x * (1.0 + torch.tanh(inner)) + inner

    gm = fx.symbolic_trace(Formula(reused))
    x = torch.randn(8)
    assert recognise_tanh_gelu(gm) == 0
    torch.testing.assert_close(gm(x), reused(x))


SILUS = (F.silu, torch.ops.aten.silu.default)


SILU_FORMULAS = {
    "x * sigmoid(x)": lambda x: x * torch.sigmoid(x),
    "sigmoid(x) * x": lambda x: torch.sigmoid(x) * x,
    "method": lambda x: x.sigmoid() * x,
    "torch.mul": lambda x: torch.mul(F.sigmoid(x), x),
}


def silu_calls(gm):
    return [n for n in gm.graph.nodes if n.op == "call_function" and n.target in SILUS]


@pytest.mark.parametrize("form", sorted(SILU_FORMULAS))
@pytest.mark.parametrize("level", ["symbolic", "aten"])
def test_formula_becomes_one_silu_with_the_same_values(form, level):
    model = Formula(SILU_FORMULAS[form]).eval()
    x = torch.randn(4, 33) * 4
    gm = fx.symbolic_trace(model) if level == "symbolic" else torch.export.export(model, (x,)).module()
    assert recognise_silu(gm) == 1
    assert len(silu_calls(gm)) == 1
    assert not any("sigmoid" in str(n.target) for n in gm.graph.nodes)
    torch.testing.assert_close(gm(x), model(x), rtol=2e-6, atol=1e-6)


def gate_reused(x):
    gate = torch.sigmoid(x)
    return x * gate + gate


@pytest.mark.parametrize("fn", [
    gate_reused,
    lambda x: (x + 1) * torch.sigmoid(x),  # gated by another tensor
    lambda x: x * torch.sigmoid(2 * x),  # a different sigmoid argument
    lambda x: x + torch.sigmoid(x),
], ids=["sigmoid reused", "other gate", "scaled", "sum"])
def test_other_sigmoid_products_are_left_alone(fn):
    gm = fx.symbolic_trace(Formula(fn))
    x = torch.randn(8)
    assert recognise_silu(gm) == 0 and not silu_calls(gm)
    torch.testing.assert_close(gm(x), fn(x))
