"""Linear layers stored either way round are pruned as [out, in]: nn.Linear and Hugging Face's Conv1D."""

import pytest
import torch
import torch.nn as nn

from sparsepass import prune
from sparsepass.prune.layers import is_hf_conv1d, linear_weight, prunable_weight

pytorch_utils = pytest.importorskip("transformers.pytorch_utils")


def test_conv1d_is_pruned_in_blocks_of_outputs_by_inputs():
    torch.manual_seed(0)
    model = nn.Sequential(pytorch_utils.Conv1D(96, 64), nn.Linear(96, 32))  # Conv1D(nf=out, nx=in)
    masks = prune.prune_linears(model, (32, 1), 0.25)
    assert set(masks) == {"0", "1"} and masks["0"].shape == (96, 64)
    stored = model[0].weight  # [in, out]
    assert torch.equal(stored.t() != 0, masks["0"])
    # Every kept block is 32 consecutive outputs of one input: columns of the stored [in, out] weight.
    blocks = (stored.t() != 0).reshape(3, 32, 64)
    assert bool((blocks.all(dim=1) | ~blocks.any(dim=1)).all())
    assert float((stored != 0).float().mean()) == pytest.approx(0.25, abs=0.01)


def test_weight_views_are_out_by_in_and_write_through():
    conv1d, linear, conv2d = pytorch_utils.Conv1D(8, 4), nn.Linear(4, 8), nn.Conv2d(2, 3, 3)
    assert is_hf_conv1d(conv1d) and not is_hf_conv1d(linear)
    assert linear_weight(conv1d).shape == linear_weight(linear).shape == (8, 4)
    assert linear_weight(conv2d) is None and prunable_weight(conv2d) is conv2d.weight
    with torch.no_grad():
        linear_weight(conv1d)[2, 1] = 7.0
    assert conv1d.weight[1, 2] == 7.0


@torch.enable_grad()  # conftest runs tests under no_grad
def test_sparse_optimizer_prunes_conv1d_layers():
    torch.manual_seed(0)
    model = pytorch_utils.Conv1D(64, 32)
    opt = prune.SparseOptimizer(torch.optim.SGD(model.parameters(), lr=0.01), model,
                                structure=prune.Blocks(16, 1), density=0.25,
                                schedule=prune.CubicSchedule(steps=5))
    for _ in range(6):
        loss = model(torch.randn(8, 32)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    masks = opt.finalize()
    assert masks[""].shape == (64, 32) and torch.equal(model.weight.t() != 0, masks[""])
    assert float(masks[""].float().mean()) == pytest.approx(0.25)


def test_multihead_attention_packed_projection_is_pruned_without_mixing_q_k_v():
    torch.manual_seed(0)
    attention = nn.MultiheadAttention(64, 4)
    masks = prune.prune_linears(nn.Sequential(attention), (32, 1), 0.25)
    assert set(masks) == {"0", "0.out_proj"} and masks["0"].shape == (192, 64)
    assert torch.equal(attention.in_proj_weight != 0, masks["0"])
    blocks = (attention.in_proj_weight != 0).reshape(6, 32, 64)  # 32-row blocks: 2 per q, k and v
    assert bool((blocks.all(dim=1) | ~blocks.any(dim=1)).all())
    assert linear_weight(nn.MultiheadAttention(64, 4, kdim=32, vdim=32)) is None  # three weights: not pruned
