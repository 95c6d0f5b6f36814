"""Optimizer-compiler co-design: prune each layer to the structure the compiler runs fastest.

For a Linear layer of shape [N, K] at a target density, every candidate block
shape is priced by the planner's cost model on a synthetic weight with that
structure (the same `plan.choose` sparsify_graph will use), and the fastest
is chosen. A bfloat16 layer on a CPU with AMX also weighs blocks 32 columns
wide, which run on AMX tiles (the planner prices them so), as does a float32 one
when float32 matmuls may multiply in bfloat16 (PyTorch's "bf16" precision). A 3x3 conv is pruned
by whole kernels (blocks of 1 x 9 over its [out, in*9] matrix): the
connectivity sparsity the pattern conv kernel skips.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import torch.nn as nn

from sparsepass.codegen.target import canonical_target, half_precision_features, target_key
from sparsepass.passes.analysis import detect
from sparsepass.passes.plan import choose
from sparsepass.passes.precision import float32_in_bfloat16
from sparsepass.prune.layers import prunable_weight
from sparsepass.prune.structures import Blocks, Structure

#: Block shapes the co-design loop chooses among for linear layers.
CANDIDATES = (Blocks(32, 1), Blocks(16, 1), Blocks(8, 1), Blocks(4, 4), Blocks(4, 1), Blocks(1, 1))
#: And for layers that multiply in bfloat16 on a CPU with AMX: the blocks of the AMX kernel.
BFLOAT16_CANDIDATES = (Blocks(32, 32), Blocks(16, 32))


@functools.lru_cache(maxsize=None)
def _best_block(shape: tuple[int, int], density: float, target: str, tokens: int,
                dtype: str = "float32", float32_in_bfloat16: bool = False) -> tuple[Structure, float]:
    import json

    rng = np.random.default_rng(0)
    best, best_speedup = Blocks(1, 1), 0.0
    bfloat16_products = dtype == "bfloat16" or (dtype == "float32" and float32_in_bfloat16)
    amx = bfloat16_products and "amx-bf16" in half_precision_features(json.loads(target))
    for candidate in CANDIDATES + (BFLOAT16_CANDIDATES if amx else ()):
        r, c = candidate.rows, candidate.cols
        grid = rng.random((-(-shape[0] // r), -(-shape[1] // c))) < density
        weight = np.kron(grid, np.ones((r, c), dtype=np.float32))[: shape[0], : shape[1]]
        structure = dataclasses.replace(detect(weight), dtype=dtype)
        decision = choose(structure, json.loads(target), tokens=tokens, float32_in_bfloat16=float32_in_bfloat16)
        speedup = decision.estimated_speedup if decision.kernel is not None else 1.0
        if speedup > best_speedup:
            best, best_speedup = candidate, speedup
    return best, best_speedup


def structure_choices(layers: dict[str, nn.Module], density: float, target=None,
                      tokens: int = 128, float32_precision: str | None = None) -> dict[str, Structure]:
    """The structure to prune each layer to, chosen by what the target runs fastest
    (``float32_precision`` as in SparsifyOptions: None follows PyTorch's setting now)."""
    key = target_key(canonical_target(target))
    bfloat16_products = float32_in_bfloat16(float32_precision)
    choices = {}
    for name, layer in layers.items():
        if isinstance(layer, nn.Conv2d) and layer.kernel_size == (3, 3):
            choices[name] = Blocks(1, 9)
        else:
            weight = prunable_weight(layer)
            shape = (weight.shape[0], int(np.prod(weight.shape[1:])))
            dtype = str(weight.dtype).removeprefix("torch.")
            choices[name] = _best_block(shape, density, key, tokens, dtype, bfloat16_products)[0]
    return choices


def explain_choice(shape: tuple[int, int], density: float, target=None, tokens: int = 128,
                   dtype: str = "float32", float32_precision: str | None = None) -> str:
    """Why the co-design loop picks what it picks for one layer shape (and weight dtype)."""
    best, speedup = _best_block(shape, density, target_key(canonical_target(target)), tokens, dtype,
                                float32_in_bfloat16(float32_precision))
    return f"{best} blocks: estimated {speedup:.1f}x over dense at density {density}"
