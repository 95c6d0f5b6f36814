"""to_relax(): torch.export + TVM's importer, weights as constants, clear errors otherwise."""

import pytest
import torch
import torch.nn as nn

from sparsepass import SparsifyError
from sparsepass.frontends import to_relax
from sparsepass.testing.relax import relax_ops


def test_weights_become_constants():
    mod = to_relax(nn.Linear(8, 4).eval(), (torch.randn(2, 8),))
    assert len(mod["main"].params) == 1  # only the input; the weight is a constant
    assert "relax.matmul" in relax_ops(mod)


def test_training_mode_is_refused():
    with pytest.raises(SparsifyError, match="training mode"):
        to_relax(nn.Sequential(nn.Linear(8, 4)), (torch.randn(2, 8),))


class ValueBranch(nn.Module):
    def forward(self, x):
        return x * 2 if x.sum() > 0 else x


def test_export_failure_names_the_model():
    with pytest.raises(SparsifyError, match=r"ValueBranch.*torch.export failed"):
        to_relax(ValueBranch().eval(), (torch.randn(3),))
