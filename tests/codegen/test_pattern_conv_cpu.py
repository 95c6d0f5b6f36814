"""The CPU pattern conv at shapes where it splits the width into column tiles, input channels into
blocks and filters into parts, and its tap-column packing."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sparsepass.codegen.build import get_kernel
from sparsepass.codegen.pattern_conv_cpu import ConvSpec
from sparsepass.codegen.pattern_format import FIELDS, max_taps, pack, to_column_csr
from sparsepass.codegen.target import canonical_target
from sparsepass.testing import gamma
from sparsepass.testing import strategies as sps


@pytest.mark.parametrize("channels, size, stride, padding, residual", [
    (64, 56, 1, 1, False),   # many row tiles, two column tiles
    (224, 28, 1, 1, False),  # two channel blocks: partial sums between them
    (96, 14, 1, 1, True),    # one row tile: filters split into parts
    (48, 29, 2, 1, False),   # stride 2, odd size, a tail of rows
    (40, 21, 1, 0, True),    # no padding, tail rows
])
def test_blocked_pattern_conv_equals_pytorch(channels, size, stride, padding, residual):
    generator = torch.Generator().manual_seed(channels)
    mask = torch.from_numpy(sps.pattern_mask(channels, channels, 4, 8, 0.5, channels))
    weight = torch.randn(channels, channels, 3, 3, generator=generator) * mask
    bias = torch.randn(channels, generator=generator)
    spec = ConvSpec.make(in_channels=channels, out_channels=channels, height=size, width=size,
                         stride=stride, padding=padding, taps=max_taps(weight.numpy()), epilogue="relu",
                         residual=residual, target=canonical_target())
    assert spec.channel_blocks > 1 or spec.filter_parts > 1 or spec.column_tiles > 1
    packed = pack(spec, weight.numpy(), bias.numpy())
    x = torch.randn(2, channels, size, size, generator=generator)
    conv = F.conv2d(x, weight, bias, stride=stride, padding=padding)
    res = torch.randn(conv.shape, generator=generator) if residual else torch.zeros(1)
    expected = F.relu(conv + res) if residual else F.relu(conv)
    y = torch.empty(conv.shape)
    get_kernel(spec)(x, *[torch.from_numpy(getattr(packed, f)) for f in FIELDS], res, y)
    # Two-implementation rounding bound of the conv (gamma over its C*9 products) plus the adds.
    magnitude = F.conv2d(x.abs(), weight.abs(), bias.abs(), stride=stride, padding=padding).double()
    magnitude = magnitude + (res.abs().double() if residual else 0)
    bound = 2 * gamma(channels * 9 + 2) * magnitude + torch.finfo(torch.float32).tiny
    assert ((y.double() - expected.double()).abs() <= bound).all()


def test_column_packing_round_trips_and_follows_blocks_and_spans():
    mask = sps.pattern_mask(8, 10, 4, 8, 0.5, 0)
    weight = torch.randn(8, 10, 3, 3).numpy() * mask
    offset = lambda dy, dx: 100 * dy + dx  # noqa: E731
    packed = to_column_csr(weight, offset, None, channel_block=4)
    assert (packed.to_dense(10, offset) == weight).all()
    assert packed.ranges.shape == (8, 3 * 3 + 1)  # 3 blocks (channels 0-3, 4-7, 8-9) x 3 spans
    for o in range(8):
        for g in range(3):
            for span in range(3):
                entries = slice(packed.ranges[o, 3 * g + span], packed.ranges[o, 3 * g + span + 1])
                assert ((packed.cols[entries] >= 4 * g) & (packed.cols[entries] < 4 * g + 4)).all()
                top = packed.offsets[entries] // 100
                kept = weight[o, packed.cols[entries], :, packed.offsets[entries] % 100] != 0
                # Each entry's column keeps its top tap, its bottom tap `span` rows below, none outside.
                rows = np.arange(3)
                within = (rows >= top[:, None]) & (rows <= top[:, None] + span)
                assert kept[range(len(top)), top].all() and kept[range(len(top)), top + span].all()
                assert not (kept & ~within).any()
    columns = (weight != 0).any(axis=2).sum()
    assert len(packed.offsets) == columns
    with_planes = to_column_csr(weight, offset, None, channel_block=4, channel_stride=1000)
    assert (with_planes.offsets == packed.offsets + 1000 * packed.cols).all()
    assert (with_planes.to_dense(10, offset) == weight).all()
