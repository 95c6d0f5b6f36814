"""ReorderFilters: balanced filter order, absorbed so the graph's outputs never change."""

import torch
import torch.fx as fx
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsepass.passes.analysis import detect
from sparsepass.passes.fx.reorder_filters import channel_groups, reorder_filters
from sparsepass.testing import assert_equivalent
from sparsepass.testing import strategies as sps
from sparsepass.testing.models import PointwiseThenPattern


class Residual(nn.Module):
    """conv-bn-relu, conv-bn, + skip (a conv), relu, then a pool: one group with two producers."""

    def __init__(self, c, seed):
        super().__init__()
        self.a, self.bn_a = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)
        self.b, self.bn_b = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)
        self.skip = nn.Conv2d(c, c, 1)
        self.head = nn.Conv2d(c, 3, 3, padding=1)
        with torch.no_grad():
            for i, conv in enumerate((self.a, self.b)):
                conv.weight.mul_(torch.from_numpy(sps.pattern_mask(c, c, 4, 6, 0.5, seed + i)))
            for bn in (self.bn_a, self.bn_b):
                bn.running_mean.normal_()
                bn.running_var.uniform_(0.5, 2)

    def forward(self, x):
        y = torch.relu(self.bn_a(self.a(x)))
        z = torch.relu(self.bn_b(self.b(y)) + self.skip(x))
        return self.head(z), z.mean(dim=(2, 3))


@settings(max_examples=10)
@given(channels=st.integers(2, 12), seed=st.integers(0, 999))
def test_reordered_graph_equals_the_original(channels, seed):
    model = Residual(channels, seed).eval()
    reordered = reorder_filters(fx.symbolic_trace(model))
    x = torch.randn(2, channels, 6, 6, generator=torch.Generator().manual_seed(seed))
    assert_equivalent(model, reordered, [x])


def test_groups_follow_residual_adds():
    groups = channel_groups(fx.symbolic_trace(Residual(4, 0).eval()))
    names = [{n.name for n in g} for g in groups]
    assert any({"b", "skip", "add"} <= g for g in names)
    assert any({"a", "bn_a", "relu"} <= g for g in names)


def test_consumers_it_cannot_absorb_get_one_gather_and_are_reported():
    reordered = reorder_filters(fx.symbolic_trace(Residual(8, 3).eval()))
    residual_group = next(g for g in reordered.sparsepass_reorder if "skip" in g.producers)
    assert residual_group.permuted
    assert residual_group.gathers == ("relu_1 -> mean",)  # head is a conv: absorbed, no gather
    gathers = [n for n in reordered.graph.nodes if n.target is torch.index_select]
    assert len(gathers) == 1


def test_balances_contiguous_halves():
    model = Residual(16, 1).eval()
    with torch.no_grad():  # make the first half of a's filters far heavier
        model.a.weight[8:] *= torch.from_numpy(sps.pattern_mask(8, 16, 4, 6, 0.2, 9))
    report = next(g for g in reorder_filters(fx.symbolic_trace(model)).sparsepass_reorder
                  if g.producers == ("a",))
    assert report.imbalance_before > 0.55 and abs(report.imbalance_after - 0.5) < 0.03


def test_group_fed_by_something_else_is_left_alone():
    class FromInput(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            return torch.relu(self.conv(x) + x)

    reordered = reorder_filters(fx.symbolic_trace(FromInput().eval()))
    [group] = reordered.sparsepass_reorder
    assert not group.permuted and "x (not a conv)" in group.reason


def test_a_group_whose_order_would_break_sparse_1x1_blocks_is_left_alone():
    """The 1x1 producer's 4x1 blocks refuse its filters' reorder; the pattern conv's filters
    move, since they only permute the next 1x1's columns, which 4x1 blocks allow."""
    model = PointwiseThenPattern((4, 1)).eval()
    reordered = reorder_filters(fx.symbolic_trace(model))
    by_producer = {group.producers: group for group in reordered.sparsepass_reorder}
    assert not by_producer[("a",)].permuted and "blocks" in by_producer[("a",)].reason
    assert by_producer[("b",)].permuted
    assert torch.equal(reordered.a.weight, model.a.weight)
    assert detect(reordered.c.weight.detach()[:, :, 0, 0]).block == (4, 1)
    assert_equivalent(model, reordered, [torch.randn(1, 32, 12, 12)])


class ClampedPair(nn.Module):
    """Two pattern convs with a ReLU6 written as a clamp between them (MobileNet style)."""

    def __init__(self, c=16):
        super().__init__()
        self.a, self.b = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)
        with torch.no_grad():
            self.a.weight[: c // 2] *= torch.from_numpy(sps.pattern_mask(c // 2, c, 4, 6, 0.2, 4))
            self.a.weight[c // 2:] *= torch.from_numpy(sps.pattern_mask(c - c // 2, c, 4, 6, 0.9, 5))

    def forward(self, x):
        return self.b(torch.clamp(self.a(x), 0, 6))


def test_channels_pass_through_a_clamp_to_the_next_conv():
    model = ClampedPair().eval()
    reordered = reorder_filters(fx.symbolic_trace(model))
    report = next(g for g in reordered.sparsepass_reorder if g.producers == ("a",))
    assert report.permuted and report.gathers == ()
    assert_equivalent(model, reordered, [torch.randn(1, 16, 8, 8)])
