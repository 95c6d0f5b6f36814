"""Hypothesis strategies for pruned weights, layers and shapes.

The same strategies sparsepass's own tests use, public so that users can
property-test their own pipelines (``from sparsepass.testing import strategies``).
"""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import strategies as st

#: Block shapes the CPU kernels are tested with (tall, short, square, unstructured).
BLOCK_SHAPES = ((32, 1), (16, 1), (8, 1), (4, 1), (1, 4), (4, 4), (8, 8), (2, 2), (1, 1), (16, 2))


def densities() -> st.SearchStrategy[float]:
    """Fractions of blocks kept, including the edge cases 0 (all zero) and 1 (dense)."""
    return st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0.02, 0.9))


def block_shapes() -> st.SearchStrategy[tuple[int, int]]:
    return st.sampled_from(BLOCK_SHAPES)


def block_mask(rows: int, cols: int, block: tuple[int, int], density: float,
               seed: int) -> np.ndarray:
    """A [rows, cols] 0/1 mask whose kept R x C blocks (ragged at the edges) are ~density of all."""
    r, c = block
    rng = np.random.default_rng(seed)
    grid = rng.random((-(-rows // r), -(-cols // c))) < density
    return np.kron(grid, np.ones((r, c), dtype=bool))[:rows, :cols]


def n_m_mask(rows: int, cols: int, n: int, m: int, seed: int) -> np.ndarray:
    """A mask keeping exactly n of every m consecutive inputs of each row (cols % m == 0)."""
    rng = np.random.default_rng(seed)
    scores = rng.random((rows, cols // m, m))
    keep = np.argsort(scores, axis=-1)[..., :n]
    mask = np.zeros((rows, cols // m, m), dtype=bool)
    np.put_along_axis(mask, keep, True, axis=-1)
    return mask.reshape(rows, cols)


@st.composite
def pruned_weights(draw, max_side: int = 96, blocks=None) -> tuple[torch.Tensor, tuple[int, int], float]:
    """(weight [N, K] float32, block, density): a random weight pruned to whole blocks."""
    n = draw(st.integers(1, max_side))
    k = draw(st.integers(1, max_side))
    block = draw(blocks if blocks is not None else block_shapes())
    density = draw(densities())
    seed = draw(st.integers(0, 2**31 - 1))
    mask = block_mask(n, k, block, density, seed)
    values = np.random.default_rng(seed + 1).standard_normal((n, k)).astype(np.float32)
    return torch.from_numpy(values * mask), block, density


@st.composite
def pruned_linears(draw, max_side: int = 96, bias=None) -> torch.nn.Linear:
    """An eval-mode nn.Linear whose weight is block-pruned (see pruned_weights)."""
    weight, _, _ = draw(pruned_weights(max_side))
    with_bias = draw(st.booleans()) if bias is None else bias
    layer = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=with_bias)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if with_bias:
            layer.bias.copy_(torch.randn(weight.shape[0], generator=torch.Generator().manual_seed(
                draw(st.integers(0, 2**31 - 1)))))
    return layer.eval()


@st.composite
def leading_dims(draw, max_rank: int = 3, max_rows: int = 40) -> tuple[int, ...]:
    """Leading dimensions of an input (0 to max_rank of them, as in 1-D..4-D inputs)."""
    rank = draw(st.integers(0, max_rank))
    dims = draw(st.lists(st.integers(1, 6), min_size=rank, max_size=rank))
    if dims:
        dims[0] = draw(st.integers(1, max_rows))
    return tuple(dims)
