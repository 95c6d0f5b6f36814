"""Fixtures shared by the Relax pass tests."""

import pytest

from sparsepass.codegen.target import canonical_target, tvm_target


@pytest.fixture(scope="session")
def host():
    return tvm_target(canonical_target())
