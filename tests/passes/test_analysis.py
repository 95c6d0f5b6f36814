"""detect(): block shapes, N:M, zero rows/columns, measured against brute force."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from sparsepass.passes.analysis import BLOCK_SIDES, detect, spans_needed
from sparsepass.testing import strategies as sps


def brute_fit(w: np.ndarray, r: int, c: int) -> tuple[int, int]:
    blocks = stored = 0
    for i in range(0, w.shape[0], r):
        for j in range(0, w.shape[1], c):
            tile = w[i:i + r, j:j + c]
            if tile.any():
                blocks += 1
                stored += tile.size
    return blocks, stored


@given(sps.pruned_weights(max_side=70))
def test_block_fits_match_brute_force(case):
    weight, _, _ = case
    w = weight.numpy()
    structure = detect(w)
    for r, c in [(1, 1), (4, 4), (32, 1), (1, 8), (64, 2), (2, 16)]:
        fit = structure.fit(r, c)
        assert (fit.blocks, fit.stored) == brute_fit(w, r, c)


@given(sps.pruned_weights(max_side=90))
def test_detected_block_is_exact_and_at_least_the_planted_one(case):
    weight, (r, c), density = case
    structure = detect(weight)
    assert structure.nnz == int((weight != 0).sum())
    if structure.nnz == 0:
        assert structure.kind == "empty"
        return
    br, bc = structure.block
    assert structure.fit(br, bc).stored == structure.nnz  # exact: stores no zero
    assert spans_needed(structure.fit(br, bc), structure.shape)  # no side past the matrix's
    if r in BLOCK_SIDES and c in BLOCK_SIDES:
        assert structure.fit(r, c).stored == structure.nnz
        if spans_needed(structure.fit(r, c), structure.shape):
            assert br * bc >= r * c


def test_block_32x1_recognised_on_bert_shape():
    rng = np.random.default_rng(0)
    mask = sps.block_mask(3072, 768, (32, 1), 0.1, 0)
    w = rng.standard_normal((3072, 768)).astype(np.float32) * mask
    s = detect(w)
    assert s.block == (32, 1) and s.kind == "block"
    assert abs(s.density - 0.1) < 0.02


@given(st.integers(1, 40), st.sampled_from([(1, 4), (2, 4), (2, 8), (4, 8)]), st.integers(0, 99))
def test_n_m_detected(rows, nm, seed):
    n, m = nm
    mask = sps.n_m_mask(rows, m * 6, n, m, seed)
    w = np.random.default_rng(seed).standard_normal(mask.shape) * mask + 0.0
    found = detect(w).n_m
    assert found is not None and found[1] in (4, 8) and found[0] / found[1] <= n / m


def test_zero_rows_and_columns_and_flags():
    w = np.ones((5, 6), dtype=np.float32)
    w[1] = 0
    w[:, [0, 4]] = 0
    w[3, 3] = np.nan
    s = detect(torch.from_numpy(w))
    assert s.zero_rows == (1,) and s.zero_cols == (0, 4)
    assert not s.finite and s.dtype == "float32"


def test_dense_and_empty_kinds():
    assert detect(np.ones((8, 8))).kind == "dense"
    assert detect(np.zeros((8, 8))).kind == "empty"


def test_rejects_non_2d():
    with pytest.raises(ValueError, match="2-D"):
        detect(np.ones((2, 3, 4)))


def test_a_block_never_spans_more_than_the_matrix_needs():
    """A one-channel 1x1 conv is a 1x1 block, not 64x64 (which was planned, and took minutes to
    compile); a 20-row matrix can be 32 rows tall (one ragged block row) but not 64."""
    assert detect(np.ones((1, 1), np.float32) * np.eye(1, dtype=np.float32)).block == (1, 1)
    tall = np.zeros((20, 64), np.float32)
    tall[:, :2] = 1
    assert detect(tall).block == (32, 2)
