"""The public hypothesis strategies produce what they promise."""

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st

from sparsepass.passes.analysis import detect
from sparsepass.testing import strategies as sps


@given(sps.pattern_masks())
def test_pattern_masks_keep_whole_patterns(mask):
    flat = mask.reshape(-1, 9)
    kept = flat[flat.any(axis=1)]
    if len(kept):
        taps = kept.sum(axis=1)
        assert (taps == taps[0]).all() and kept[:, 4].all()  # same tap count, centre always kept
        assert len({tuple(row) for row in kept}) <= 8


@given(st.integers(1, 30), st.integers(1, 30), st.sampled_from([(1, 4), (2, 4), (2, 8)]), st.integers(0, 9))
def test_n_m_masks_are_exact(rows, groups, nm, seed):
    n, m = nm
    mask = sps.n_m_mask(rows, groups * m, n, m, seed)
    assert (mask.reshape(rows, groups, m).sum(-1) == n).all()


@given(sps.pruned_weights())
def test_pruned_weights_are_block_exact(case):
    weight, block, _ = case
    structure = detect(weight)
    r, c = block
    if r in (1, 2, 4, 8, 16, 32, 64) and c in (1, 2, 4, 8, 16, 32, 64):
        assert structure.fit(r, c).stored == structure.nnz


@given(sps.pruned_conv2ds())
def test_pruned_conv2ds_run(conv):
    x = torch.randn(1, conv.in_channels, 9, 9)
    assert conv(x).shape[1] == conv.out_channels and not conv.training


@given(sps.small_graphs())
def test_small_graphs_run_and_are_pruned(case):
    model, width = case
    assert model(torch.randn(2, width)).dim() == 2
    weights = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert all(np.isfinite(w.detach().numpy()).all() for w in weights)
