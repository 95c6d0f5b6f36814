"""pattern_prune: PCONV's projection gives exact connectivity and at most `patterns` patterns."""

import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsepass import prune
from sparsepass.passes.conv_analysis import detect_conv


class TwoConvs(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.a, self.b = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, 2 * c, 3, padding=1)
        self.skip = nn.Conv2d(c, c, 1)  # not 3x3: left alone


@settings(max_examples=15)
@given(channels=st.integers(1, 12), taps=st.integers(2, 6), patterns=st.integers(1, 8),
       connectivity=st.floats(0, 1), seed=st.integers(0, 99))
def test_projection_is_exact(channels, taps, patterns, connectivity, seed):
    torch.manual_seed(seed)
    model = TwoConvs(channels)
    skip_before = model.skip.weight.clone()
    masks = prune.pattern_prune(model, taps=taps, patterns=patterns, connectivity=connectivity)
    assert set(masks) == {"a", "b"}
    for name in ("a", "b"):
        conv = getattr(model, name)
        structure = detect_conv(conv.weight)
        kernels = conv.weight.shape[0] * conv.weight.shape[1]
        assert structure.kernels_kept == round(connectivity * kernels)
        assert len(structure.patterns) <= patterns
        assert structure.max_taps <= taps
        assert torch.equal(conv.weight != 0, masks[name])
        kept = masks[name].reshape(-1, 9)
        assert kept[kept.any(1)][:, 4].all()  # the centre tap is in every pattern
    assert torch.equal(model.skip.weight, skip_before)


def test_keeps_each_kernels_best_pattern():
    conv = nn.Conv2d(1, 1, 3, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[[9.0, 0.1, 0.1], [0.1, 1.0, 0.1], [0.1, 0.1, 8.0]]]]))
    prune.pattern_prune(nn.Sequential(conv), taps=3, patterns=1, connectivity=1.0)
    assert (conv.weight[0, 0] != 0).nonzero().tolist() == [[0, 0], [1, 1], [2, 2]]
