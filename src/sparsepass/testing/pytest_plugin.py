"""pytest plugin (entry point ``pytest11``): the ``sparsepass_equivalence`` fixture.

    def test_my_pruned_model(sparsepass_equivalence):
        fast = passes.sparsify_graph(frontends.trace(model, (x,)))
        sparsepass_equivalence(model, fast, [(x,)])
"""

import pytest

from sparsepass.testing.equivalence import assert_equivalent


@pytest.fixture
def sparsepass_equivalence():
    """``assert_equivalent(reference, candidate, inputs, *, rtol=None, atol=None, entry="main")``."""
    return assert_equivalent
