"""x * sigmoid(x) becomes one SiLU call, and only where nothing else reads the sigmoid."""

import pytest
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from sparsepass.passes.fx.silu_formula import recognise_silu

SILUS = (F.silu, torch.ops.aten.silu.default)


class Formula(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


FORMULAS = {
    "x * sigmoid(x)": lambda x: x * torch.sigmoid(x),
    "sigmoid(x) * x": lambda x: torch.sigmoid(x) * x,
    "method": lambda x: x.sigmoid() * x,
    "torch.mul": lambda x: torch.mul(F.sigmoid(x), x),
}


def silu_calls(gm):
    return [n for n in gm.graph.nodes if n.op == "call_function" and n.target in SILUS]


@pytest.mark.parametrize("form", sorted(FORMULAS))
@pytest.mark.parametrize("level", ["symbolic", "aten"])
def test_formula_becomes_one_silu_with_the_same_values(form, level):
    model = Formula(FORMULAS[form]).eval()
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
def test_other_formulas_are_left_alone(fn):
    gm = fx.symbolic_trace(Formula(fn))
    x = torch.randn(8)
    assert recognise_silu(gm) == 0 and not silu_calls(gm)
    torch.testing.assert_close(gm(x), fn(x))
