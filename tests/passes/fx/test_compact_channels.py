"""compact_channels: dead channels leave physically, live ones never do, outputs stay equal."""

import pytest
import torch
import torch.fx as fx
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsepass import passes
from sparsepass.passes.fx.compact_channels import compact_channels
from sparsepass.testing import assert_equivalent
from sparsepass.testing import strategies as sps
from sparsepass.testing.models import (
    BlockPrunedMlp,
    ResNet18,
    randomize_batchnorm,
    remove_half_block_filters,
)


def params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def kill(linear: nn.Linear, rows, keep_bias=False):
    with torch.no_grad():
        linear.weight[rows] = 0
        if linear.bias is not None and not keep_bias:
            linear.bias[rows] = 0


@settings(max_examples=15)
@given(case=sps.small_graphs(), data=st.data())
def test_random_graphs_with_dead_channels_stay_equal(case, data):
    model, width = case
    for layer in model.modules():
        if isinstance(layer, nn.Linear) and data.draw(st.booleans()):
            rows = data.draw(st.lists(st.integers(0, layer.out_features - 1), max_size=layer.out_features))
            kill(layer, rows)
    x = torch.randn(3, width)
    compacted = compact_channels(fx.symbolic_trace(model), (x,))
    assert params(compacted) <= params(model)
    assert_equivalent(model, compacted, [x])


class Mlp(nn.Module):
    def __init__(self, act=torch.relu):
        super().__init__()
        self.a, self.b, self.act = nn.Linear(8, 16), nn.Linear(16, 4), act

    def forward(self, x):
        return self.b(self.act(self.a(x)))


@pytest.mark.parametrize("act", [torch.relu, nn.ReLU6(), lambda h: h.clamp(min=0.0)], ids=["relu", "relu6", "clamp"])
def test_dead_hidden_units_are_removed(act):
    model = Mlp(act).eval()
    kill(model.a, [1, 5, 9])
    compacted = compact_channels(fx.symbolic_trace(model), (torch.randn(2, 8),))
    assert compacted.a.weight.shape == (13, 8) and compacted.b.weight.shape == (4, 13)
    assert params(compacted) < params(model)
    assert_equivalent(model, compacted, [torch.randn(5, 8)])


def test_a_channel_alive_through_its_bias_is_kept():
    model = Mlp().eval()
    kill(model.a, [3], keep_bias=True)
    with torch.no_grad():
        model.a.bias[3] = 2.0
    compacted = compact_channels(fx.symbolic_trace(model), (torch.randn(2, 8),))
    assert compacted.a.weight.shape == (16, 8)
    assert_equivalent(model, compacted, [torch.randn(5, 8)])


def test_unread_channels_go_even_when_not_zero():
    model = Mlp().eval()
    with torch.no_grad():
        model.b.weight[:, [0, 2]] = 0  # nobody reads hidden units 0 and 2
    compacted = compact_channels(fx.symbolic_trace(model), (torch.randn(2, 8),))
    assert compacted.a.weight.shape == (14, 8)
    assert_equivalent(model, compacted, [torch.randn(5, 8)])


def test_an_op_with_unknown_mapping_pins_the_group_and_says_so():
    model = Mlp(act=torch.sigmoid).eval()  # sigmoid(0) = 0.5: the zeros do not stay zero
    kill(model.a, [1])
    compacted = compact_channels(fx.symbolic_trace(model), (torch.randn(2, 8),))
    assert compacted.a.weight.shape == (16, 8)
    _, kept = compacted.sparsepass_compaction
    assert any("sigmoid" in reason for reason in kept)


def test_residual_group_is_removed_only_where_dead_in_every_member():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.head = nn.Linear(6, 6), nn.Linear(6, 6), nn.Linear(6, 2)
            self.stem = nn.Linear(4, 6)

        def forward(self, x):
            h = self.stem(x)
            return self.head(torch.relu(self.a(h) + self.b(h)))

    model = Residual().eval()
    kill(model.a, [0, 1])
    kill(model.b, [1, 2])  # only channel 1 is dead in both members of the add
    compacted = compact_channels(fx.symbolic_trace(model), (torch.randn(2, 4),))
    assert compacted.a.weight.shape == (5, 6) and compacted.b.weight.shape == (5, 6)
    assert compacted.head.weight.shape == (2, 5)
    assert_equivalent(model, compacted, [torch.randn(3, 4)])


def test_resnet_with_half_the_filters_removed_and_sparsify_reports_it():
    torch.manual_seed(0)
    model = remove_half_block_filters(randomize_batchnorm(ResNet18(num_classes=10, width=16)).eval())
    x = torch.randn(1, 3, 64, 64)
    fast = passes.sparsify_graph(fx.symbolic_trace(model), example_inputs=(x,))
    compacted = {name: (before, after) for name, before, after in fast.sparsepass_report.compacted}
    assert compacted["layers.0.conv1"] == ((16, 16, 3, 3), (8, 16, 3, 3))
    assert compacted["layers.0.conv2"] == ((16, 16, 3, 3), (16, 8, 3, 3))
    assert "compacted layers.0.conv1: 16x16x3x3 -> 8x16x3x3" in str(fast.sparsepass_report)
    assert params(fast) < params(model)
    assert_equivalent(model, fast, [x])


@settings(max_examples=15)
@given(inner=st.integers(2, 40), outer=st.integers(1, 12), data=st.data())
def test_parameter_count_strictly_smaller_whenever_something_is_dead(inner, outer, data):
    model = nn.Sequential(nn.Linear(outer, inner), nn.ReLU(), nn.Linear(inner, outer)).eval()
    dead = data.draw(st.lists(st.integers(0, inner - 1), min_size=1, max_size=inner - 1, unique=True))
    kill(model[0], dead)
    x = torch.randn(4, outer)
    compacted = compact_channels(fx.symbolic_trace(model), (x,))
    assert params(compacted) == params(model) - len(dead) * (2 * outer + 1)
    assert_equivalent(model, compacted, [x])


def test_unread_units_leave_a_block_sparse_layer_only_in_whole_blocks():
    model = BlockPrunedMlp().eval()  # units 3 and 5 of the first block, all of the second, unread
    compacted = compact_channels(fx.symbolic_trace(model), (torch.randn(2, 64),))
    assert compacted.a.weight.shape == (248, 64)  # rows 8-15 went, 3 and 5 stayed
    assert passes.analysis.detect(compacted.a.weight).block[0] % 8 == 0
    _, kept = compacted.sparsepass_compaction
    assert any("a's 8x1 blocks" in why for why in kept)
    assert_equivalent(model, compacted, [torch.randn(5, 64)])
