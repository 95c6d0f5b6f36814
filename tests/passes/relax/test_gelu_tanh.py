"""RecogniseTanhGelu: the written-out tanh-GELU becomes R.nn.gelu_tanh in Relax, and fuses."""

import math

import pytest
import torch
import torch.nn as nn
import tvm

from sparsepass import frontends
from sparsepass.passes import relax as sp
from sparsepass.passes.plan import CostModel
from sparsepass.testing import assert_equivalent
from sparsepass.testing import strategies as sps
from sparsepass.testing.relax import relax_ops, run_vm

C = math.sqrt(2.0 / math.pi)


class Gelu(nn.Module):
    """A linear (pruned 16x1 to 20%) followed by ``form`` of its output."""

    def __init__(self, form):
        super().__init__()
        self.linear, self.form = nn.Linear(48, 64), form
        with torch.no_grad():
            self.linear.weight.mul_(torch.from_numpy(sps.block_mask(64, 48, (16, 1), 0.2, 0)))

    def forward(self, x):
        y = self.linear(x)
        if self.form == "hugging face":
            return 0.5 * y * (1.0 + torch.tanh(C * (y + 0.044715 * torch.pow(y, 3.0))))
        if self.form == "operands swapped":
            return (torch.tanh((0.044715 * y ** 3 + y) * C) + 1.0) * (y * 0.5)
        if self.form == "wrong constant":
            return 0.5 * y * (1.0 + torch.tanh(0.8 * (y + 0.044715 * torch.pow(y, 3.0))))
        inner = C * (y + 0.044715 * torch.pow(y, 3.0))  # "reused": an intermediate used again
        return 0.5 * y * (1.0 + torch.tanh(inner)) + inner


@pytest.mark.parametrize("form", ["hugging face", "operands swapped"])
def test_formula_becomes_one_gelu_tanh_with_the_same_values(form, host):
    model, x = Gelu(form).eval(), torch.randn(2, 8, 48)
    after = sp.RecogniseTanhGelu()(frontends.to_relax(model, (x,)))
    ops = relax_ops(after)
    assert ops.count("relax.nn.gelu_tanh") == 1
    assert not {"relax.tanh", "relax.power"} & set(ops) and ops.count("relax.multiply") == 0
    torch.testing.assert_close(run_vm(tvm.compile(after, target=host), x), model(x), rtol=4e-6, atol=1e-6)


@pytest.mark.parametrize("form", ["wrong constant", "reused"])
def test_other_formulas_are_left_alone(form):
    before = frontends.to_relax(Gelu(form).eval(), (torch.randn(8, 48),))
    after = sp.RecogniseTanhGelu()(before)
    tvm.ir.assert_structural_equal(after["main"], before["main"])


def test_recognised_formula_fuses_into_the_sparse_kernel(host):
    model, x = Gelu("hugging face").eval(), torch.randn(2, 8, 48)
    always = sp.SparsifyLinearOptions(cost=CostModel(min_speedup=0.0))
    passes = tvm.transform.Sequential([sp.RecogniseTanhGelu(), sp.SparsifyLinear(options=always)])
    after = passes(frontends.to_relax(model, (x,)))
    [layer] = sp.report(after)
    assert layer.kernel == "bsr 16x1 rows +gelu_tanh"
    assert {"relax.matmul", "relax.nn.gelu_tanh", "relax.tanh"}.isdisjoint(relax_ops(after))
    assert_equivalent(model, tvm.compile(after, target=host), [x])
