"""Relax CompactChannels and ReorderFilters: fewer or reordered constants, same outputs."""

import numpy as np
import pytest
import torch
import torch.nn as nn
import tvm

from sparsepass import frontends, prune
from sparsepass.passes import relax as sp
from sparsepass.testing import assert_equivalent
from sparsepass.testing.models import (
    BlockPrunedMlp,
    PointwiseThenPattern,
    ResNet18,
    randomize_batchnorm,
    remove_half_block_filters,
)


def constants(mod):
    found = []
    tvm.relax.analysis.post_order_visit(
        mod["main"].body,
        lambda e: found.append(e.value.numpy()) if isinstance(e, tvm.ir.Constant) and hasattr(e.value, "numpy")
        else None)
    return found


def size(mod) -> int:
    return sum(c.size for c in constants(mod))


class Mlp(nn.Module):
    def __init__(self, act=torch.relu):
        super().__init__()
        self.a, self.b, self.act = nn.Linear(8, 16), nn.Linear(16, 4), act

    def forward(self, x):
        return self.b(self.act(self.a(x)))


@pytest.mark.parametrize("act", [torch.relu, nn.ReLU6(), lambda h: torch.clamp(h, -1.0, 2.0)],
                         ids=["relu", "relu6", "clamp"])
def test_dead_hidden_units_leave_and_outputs_stay(host, act):
    model = Mlp(act).eval()
    with torch.no_grad():
        model.a.weight[[1, 5]] = 0
        model.a.bias[[1, 5]] = 0
    x = torch.randn(3, 8)
    mod = frontends.to_relax(model, (x,))
    compacted = sp.CompactChannels()(mod)
    assert size(compacted) == size(mod) - 2 * 8 - 2 - 2 * 4
    assert_equivalent(model, tvm.compile(compacted, target=host), [x])


def test_bias_alive_and_unknown_ops_keep_their_channels():
    for act, bias in ((torch.relu, 1.0), (torch.sigmoid, 0.0)):
        model = Mlp(act).eval()
        with torch.no_grad():
            model.a.weight[[2]] = 0
            model.a.bias[[2]] = bias
        mod = frontends.to_relax(model, (torch.randn(3, 8),))
        assert size(sp.CompactChannels()(mod)) == size(mod)


def test_dead_units_leave_a_block_sparse_layer_only_in_whole_blocks(host):
    model, x = BlockPrunedMlp().eval(), torch.randn(128, 64)
    compacted = sp.CompactChannels()(frontends.to_relax(model, (x,)))
    assert sorted(c.shape for c in constants(compacted) if c.ndim == 2) == [(64, 248), (248, 64)]
    assert sp.report(sp.SparsifyLinear()(compacted))[0].kernel.startswith("bsr 8x1")
    assert_equivalent(model, tvm.compile(compacted, target=host), [x])


def resnet(seed=0):
    torch.manual_seed(seed)
    return randomize_batchnorm(ResNet18(num_classes=10, width=16)).eval()


def test_resnet_with_half_its_block_filters_removed(host):
    model = remove_half_block_filters(resnet())
    x = torch.randn(1, 3, 64, 64)
    mod = frontends.to_relax(model, (x,))
    compacted = sp.CompactChannels()(mod)
    assert size(compacted) < 0.6 * size(mod)
    assert_equivalent(model, tvm.compile(compacted, target=host), [x])


def test_reorder_filters_permutes_and_keeps_outputs(host):
    model = resnet(1)
    prune.pattern_prune(model, taps=4, patterns=8, connectivity=0.5)
    x = torch.randn(1, 3, 64, 64)
    mod = frontends.to_relax(model, (x,))
    reordered = sp.ReorderFilters()(mod)
    changed = sum(not np.array_equal(a, b) for a, b in zip(constants(mod), constants(reordered)))
    assert changed > 10
    assert_equivalent(model, tvm.compile(reordered, target=host), [x])


def test_reorder_filters_keeps_the_blocks_of_bsr_layers(host):
    """Permuting the 1x1 producer's filters would break its 4x1 blocks (refused); permuting the
    pattern conv's filters moves only the 1x1 reader's columns, which 4x1 blocks allow."""
    torch.manual_seed(0)
    model = PointwiseThenPattern((4, 1)).eval()
    x = torch.randn(1, 32, 14, 14)
    mod = frontends.to_relax(model, (x,))
    reordered = sp.ReorderFilters()(mod)
    weights = [c for c in constants(mod) if c.ndim == 4]
    moved = [not np.array_equal(a, b) for a, b in zip(weights, [c for c in constants(reordered) if c.ndim == 4])]
    assert moved == [False, True, True]  # a kept; b's filters and c's columns permuted
    lowered = sp.SparsifyConv2d()(reordered)
    assert [layer.structure for layer in sp.report(lowered) if layer.shape[2:] == (1, 1)] == ["block 4x1"] * 2
    assert_equivalent(model, tvm.compile(reordered, target=host), [x])
