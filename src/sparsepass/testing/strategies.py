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


def pattern_mask(out_channels: int, in_channels: int, taps: int, patterns: int, connectivity: float,
                 seed: int) -> np.ndarray:
    """A PCONV mask [out, in, 3, 3]: each kept kernel keeps ``taps`` taps (the centre and
    ``taps - 1`` others) from a set of ``patterns`` distinct patterns; a fraction
    ``connectivity`` of the kernels is kept at all."""
    rng = np.random.default_rng(seed)
    others = [i for i in range(9) if i != 4]
    chosen: set[tuple[int, ...]] = set()
    while len(chosen) < patterns:
        chosen.add(tuple(sorted([4, *rng.choice(others, size=taps - 1, replace=False).tolist()])))
    table = np.zeros((patterns, 9), dtype=bool)
    for row, taps_of in enumerate(sorted(chosen)):
        table[row, list(taps_of)] = True
    kernels = table[rng.integers(0, patterns, size=(out_channels, in_channels))]
    kept = rng.random((out_channels, in_channels)) < connectivity
    return (kernels & kept[..., None]).reshape(out_channels, in_channels, 3, 3)


@st.composite
def pattern_masks(draw, max_channels: int = 24) -> np.ndarray:
    """Random PCONV masks: channels, 1-8 patterns of 2-5 taps, connectivity 0..1."""
    out_channels, in_channels = draw(st.integers(1, max_channels)), draw(st.integers(1, max_channels))
    taps = draw(st.integers(2, 5))
    patterns = draw(st.integers(1, 8))
    connectivity = draw(st.sampled_from([0.0, 1.0]) | st.floats(0.05, 0.95))
    return pattern_mask(out_channels, in_channels, taps, patterns, connectivity,
                        draw(st.integers(0, 2**31 - 1)))


def unstructured_mask(rows: int, cols: int, density: float, seed: int) -> np.ndarray:
    return block_mask(rows, cols, (1, 1), density, seed)


@st.composite
def pruned_conv2ds(draw, max_channels: int = 24) -> torch.nn.Conv2d:
    """An eval-mode Conv2d: 3x3 pattern-pruned (stride 1/2, padding 0/1) or 1x1 block-pruned."""
    seed = draw(st.integers(0, 2**31 - 1))
    generator = torch.Generator().manual_seed(seed)
    if draw(st.booleans()):
        mask = draw(pattern_masks(max_channels))
        out_channels, in_channels = mask.shape[:2]
        conv = torch.nn.Conv2d(in_channels, out_channels, 3, stride=draw(st.sampled_from([1, 2])),
                               padding=draw(st.sampled_from([0, 1])), bias=draw(st.booleans()))
    else:
        out_channels, in_channels = draw(st.integers(1, max_channels)), draw(st.integers(1, max_channels))
        mask = block_mask(out_channels, in_channels, draw(block_shapes()), draw(densities()), seed)
        mask = mask[..., None, None]
        conv = torch.nn.Conv2d(in_channels, out_channels, 1, bias=draw(st.booleans()))
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * torch.from_numpy(mask))
        if conv.bias is not None:
            conv.bias.copy_(torch.randn(out_channels, generator=generator))
    return conv.eval()


class RandomGraph(torch.nn.Module):
    """A small network built from a recipe of steps over a feature width.

    Steps: ``("linear", layer)``, ``("relu", None)``, ``("residual", layer)``
    (x + layer(x)) and ``("concat", (a, b))`` (cat([a(x), b(x)], -1)).
    """

    def __init__(self, steps):
        super().__init__()
        self.kinds = [kind for kind, _ in steps]
        self.layers = torch.nn.ModuleList(
            torch.nn.ModuleList(layer) if isinstance(layer, tuple) else (layer or torch.nn.Identity())
            for _, layer in steps)

    def forward(self, x):
        for kind, layer in zip(self.kinds, self.layers):
            if kind == "linear":
                x = layer(x)
            elif kind == "relu":
                x = torch.relu(x)
            elif kind == "residual":
                x = x + layer(x)
            else:
                x = torch.cat([layer[0](x), layer[1](x)], dim=-1)
        return x


def _pruned_linear(draw, in_features: int, out_features: int) -> torch.nn.Linear:
    seed = draw(st.integers(0, 2**31 - 1))
    mask = block_mask(out_features, in_features, draw(block_shapes()), draw(densities()), seed)
    layer = torch.nn.Linear(in_features, out_features, bias=draw(st.booleans()))
    with torch.no_grad():
        generator = torch.Generator().manual_seed(seed)
        layer.weight.copy_(torch.randn(out_features, in_features, generator=generator) * torch.from_numpy(mask))
        if layer.bias is not None:
            layer.bias.copy_(torch.randn(out_features, generator=generator))
    return layer


@st.composite
def small_graphs(draw, max_steps: int = 5, max_width: int = 48) -> tuple[RandomGraph, int]:
    """(an eval-mode RandomGraph of pruned linears, its input width): chains, residual blocks, concats."""
    width = first = draw(st.integers(1, max_width))
    steps = []
    for _ in range(draw(st.integers(1, max_steps))):
        kind = draw(st.sampled_from(["linear", "relu", "residual", "concat"]))
        if kind == "linear":
            out = draw(st.integers(1, max_width))
            steps.append((kind, _pruned_linear(draw, width, out)))
            width = out
        elif kind == "relu":
            steps.append((kind, None))
        elif kind == "residual":
            steps.append((kind, _pruned_linear(draw, width, width)))
        else:
            a, b = draw(st.integers(1, max_width // 2)), draw(st.integers(1, max_width // 2))
            steps.append((kind, (_pruned_linear(draw, width, a), _pruned_linear(draw, width, b))))
            width = a + b
    return RandomGraph(steps).eval(), first
