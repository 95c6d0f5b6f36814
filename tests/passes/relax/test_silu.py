"""RecogniseSilu: the importer's ``x * sigmoid(x)`` becomes R.nn.silu, and fuses into convs."""

import pytest
import torch
import torch.nn as nn
import tvm

from sparsepass import frontends, prune
from sparsepass.passes import relax as sp
from sparsepass.testing import assert_equivalent
from sparsepass.testing.relax import relax_ops


class SiluForms(nn.Module):
    def __init__(self, form):
        super().__init__()
        self.form = form

    def forward(self, x):
        if self.form == "module":
            return nn.functional.silu(x)
        if self.form == "swapped":
            return torch.sigmoid(x) * x
        if self.form == "other operand":
            return (x + 1) * torch.sigmoid(x)
        s = torch.sigmoid(x)  # "sigmoid reused"
        return x * s + s


@pytest.mark.parametrize("form, silus", [("module", 1), ("swapped", 1), ("other operand", 0), ("sigmoid reused", 0)])
def test_only_x_times_its_own_sigmoid_becomes_silu(form, silus, host):
    model, x = SiluForms(form).eval(), torch.randn(4, 33) * 4
    after = sp.RecogniseSilu()(frontends.to_relax(model, (x,)))
    assert relax_ops(after).count("relax.nn.silu") == silus
    assert ("relax.sigmoid" in relax_ops(after)) == (silus == 0)
    assert_equivalent(model, tvm.compile(after, target=host), [x])


def test_an_efficientnet_style_1x1_conv_fuses_its_silu_in_the_pipeline(host):
    conv = nn.Conv2d(64, 64, 1)
    with torch.no_grad():
        conv.weight.view(64, 64).mul_(prune.block_mask(conv.weight.view(64, 64), (4, 1), 0.25))
    model = nn.Sequential(conv, nn.SiLU()).eval()
    x = torch.randn(1, 64, 28, 28)
    mod = tvm.transform.Sequential([sp.RecogniseSilu(), sp.SparsifyConv2d()])(frontends.to_relax(model, (x,)))
    assert sp.report(mod)[0].kernel == "bsr 4x1 channels +silu"
    assert not {"relax.sigmoid", "relax.multiply", "relax.nn.silu"} & set(relax_ops(mod))
    assert_equivalent(model, tvm.compile(mod, target=host), [x])
