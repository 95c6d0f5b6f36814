"""A model factory for the CI equivalence check, the way a user's project would provide one.

    python -m sparsepass.testing check examples/ci_equivalence_factory.py:build
    python -m sparsepass.testing check examples/ci_equivalence_factory.py:build --path relax

``build()`` returns ``(model, example_inputs)``: here a small pruned MLP block.
The command sparsifies it, prints the per-layer report, and exits non-zero if
the result is not equivalent to the dense model. tests/testing runs it.
"""

import torch
import torch.nn as nn

from sparsepass import prune


def build():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 512), nn.GELU(), nn.Linear(512, 256)).eval()
    prune.prune_linears(model, (32, 1), 0.1)
    return model, (torch.randn(4, 32, 256),)
