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


def test_a_half_precision_model_the_importer_fails_on_points_to_the_fx_path():
    model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 4)).eval().bfloat16()
    with pytest.raises(SparsifyError, match=r"Sequential.*importer failed.*torch\.bfloat16 weights.*torch\.fx"):
        to_relax(model, (torch.randn(2, 8, dtype=torch.bfloat16),))


class PositionTable(nn.Module):
    """A Hugging Face encoder's position embeddings: a table sliced to the input's length."""

    def __init__(self):
        super().__init__()
        self.table = nn.Embedding(512, 8)
        self.register_buffer("positions", torch.arange(512)[None])

    def forward(self, x):
        return x + self.table(self.positions[:, : x.shape[1]])


def test_dynamic_lengths_keep_known_shapes_after_a_slice_export_bounds():
    import tvm

    from sparsepass.codegen.target import canonical_target, tvm_target
    from sparsepass.testing.relax import run_vm

    model = PositionTable().eval()
    mod = to_relax(model, (torch.randn(2, 16, 8),), dynamic_shapes="auto")
    [out] = mod["main"].body.body.ty.fields
    assert "T.min" not in str(mod["main"]) and int(out.shape.values[-1]) == 8  # a known shape
    executable = tvm.compile(mod, target=tvm_target(canonical_target()))
    for length in (16, 3, 512):
        x = torch.randn(2, length, 8)
        torch.testing.assert_close(run_vm(executable, x), model(x))
