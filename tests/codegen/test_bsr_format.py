"""to_bsr(): round trip and balanced parts."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from sparsepass.codegen.bsr_format import balanced_parts, to_bsr
from sparsepass.testing import strategies as sps


@given(sps.pruned_weights(max_side=70), st.integers(1, 9))
def test_round_trip(case, parts):
    weight, block, _ = case
    bsr = to_bsr(weight.numpy(), block, parts)
    np.testing.assert_array_equal(bsr.to_dense(), weight.numpy())
    assert bsr.data.shape[1:] == (block[1], block[0])
    assert len(bsr.parts) == parts + 1


@given(st.lists(st.integers(0, 50), min_size=1, max_size=300), st.integers(1, 64))
def test_parts_cover_rows_in_order_with_balanced_work(blocks, count):
    per_row = np.array(blocks)
    bounds = balanced_parts(per_row, count)
    assert bounds[0] == 0 and bounds[-1] == len(per_row) and len(bounds) == count + 1
    assert np.all(np.diff(bounds) >= 0)
    work = per_row + 2.0
    shares = [work[a:b].sum() for a, b in zip(bounds[:-1], bounds[1:])]
    # No part exceeds its fair share by more than one row's work.
    assert max(shares) <= work.sum() / count + work.max() + 1e-9
