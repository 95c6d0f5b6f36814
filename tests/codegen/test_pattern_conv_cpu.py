"""The CPU pattern conv at shapes where it splits input channels into blocks and filters into parts."""

import pytest
import torch
import torch.nn.functional as F

from sparsepass.codegen.build import get_kernel
from sparsepass.codegen.pattern_conv_cpu import ConvSpec
from sparsepass.codegen.pattern_format import max_taps, to_pattern_csr
from sparsepass.codegen.target import canonical_target
from sparsepass.testing import gamma
from sparsepass.testing import strategies as sps


@pytest.mark.parametrize("channels, size, stride, padding, residual", [
    (64, 56, 1, 1, False),   # many row tiles, several channel blocks
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
    assert spec.channel_blocks > 1 or spec.filter_parts > 1
    packed = to_pattern_csr(weight.numpy(), spec.tap_offset, spec.taps, bias.numpy(), spec.channel_block)
    x = torch.randn(2, channels, size, size, generator=generator)
    conv = F.conv2d(x, weight, bias, stride=stride, padding=padding)
    res = torch.randn(conv.shape, generator=generator) if residual else torch.zeros(1)
    expected = F.relu(conv + res) if residual else F.relu(conv)
    y = torch.empty(conv.shape)
    get_kernel(spec)(x, *[torch.from_numpy(getattr(packed, f)) for f in
                          ("offsets", "weights", "cols", "ranges", "bias")], res, y)
    # Two-implementation rounding bound of the conv (gamma over its C*9 products) plus the adds.
    magnitude = F.conv2d(x.abs(), weight.abs(), bias.abs(), stride=stride, padding=padding).double()
    magnitude = magnitude + (res.abs().double() if residual else 0)
    bound = 2 * gamma(channels * 9 + 2) * magnitude + torch.finfo(torch.float32).tiny
    assert ((y.double() - expected.double()).abs() <= bound).all()


def test_packed_ranges_follow_the_channel_blocks():
    mask = sps.pattern_mask(8, 10, 4, 8, 0.5, 0)
    weight = torch.randn(8, 10, 3, 3).numpy() * mask
    packed = to_pattern_csr(weight, lambda dy, dx: dy * 3 + dx, 4, None, channel_block=4)
    assert packed.ranges.shape == (8, 4)  # 3 blocks: channels 0-3, 4-7, 8-9
    for o in range(8):
        for g in range(3):
            block_cols = packed.cols[packed.ranges[o, g]:packed.ranges[o, g + 1]]
            assert ((block_cols >= 4 * g) & (block_cols < 4 * g + 4)).all()
            assert len(block_cols) == mask[o, 4 * g:4 * g + 4].any(axis=(1, 2)).sum()
