"""Shared test set-up: hypothesis profiles and one kernel cache for the whole session."""

import os
import tempfile

import pytest
from hypothesis import HealthCheck, settings

# Kernels compiled by one test are reused by the next through the on-disk cache;
# a fresh directory per session keeps runs independent of the user's own cache.
os.environ.setdefault("SPARSEPASS_CACHE_DIR", tempfile.mkdtemp(prefix="sparsepass-test-cache-"))

settings.register_profile(
    "ci",
    max_examples=20,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", max_examples=40, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
# A long randomised hunt for bugs, not for CI: HYPOTHESIS_PROFILE=fuzz pytest -k <area>.
settings.register_profile("fuzz", max_examples=300, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


@pytest.fixture(autouse=True)
def _no_grad():
    import torch

    with torch.no_grad():
        yield
