"""The examples run (at toy sizes) and do what they say."""

import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_train_sparse_transformer_reaches_the_density_and_sparsifies():
    results = load("train_sparse_transformer").main(steps=6, width=64)
    assert results["density"] == pytest.approx(0.1, abs=0.01)
    assert 0.0 <= results["sparse"][1] <= 1.0 and results["sparse_ms"] > 0
