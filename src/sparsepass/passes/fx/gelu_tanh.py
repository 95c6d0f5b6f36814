"""The tanh-approximate GELU written out as arithmetic, recognised as one GELU call.

GPT-2 and other Hugging Face models compute ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``
op by op (``NewGELUActivation``): eight elementwise ops, whose scalar ``tanh``
alone took a quarter of a sparsified GPT-2 block on a CPU. The same function is
``F.gelu(x, approximate="tanh")``; once it is one node, a sparse kernel before it
folds it into its epilogue (and where none does, PyTorch's vectorised GELU runs).
The match is structural (``formula_match``) and accepts either operand order of
each ``*`` and ``+``.
"""

from __future__ import annotations

import operator

import torch
import torch.fx as fx
import torch.nn.functional as F

from sparsepass.passes.fx.formula_match import (
    ADDS,
    MULS,
    is_call,
    other_operand,
    replace_formulas,
    split_constant,
)
from sparsepass.passes.fx.preflight import is_aten_graph
from sparsepass.passes.gelu_formula import CUBIC, SQRT_2_OVER_PI, near

aten = torch.ops.aten

_POWS = (operator.pow, torch.pow, aten.pow.Tensor_Scalar)
_TANHS = (torch.tanh, aten.tanh.default)


def _match(tanh: fx.Node) -> tuple[fx.Node, list[fx.Node]] | None:
    """(x, the formula's nodes) when ``tanh`` is the core of a tanh-GELU of x."""
    if not is_call(tanh, _TANHS, "tanh") or len(tanh.args) != 1 or len(tanh.users) != 1:
        return None
    scaled = tanh.args[0]
    inner = split_constant(scaled, MULS, SQRT_2_OVER_PI)
    if inner is None or not is_call(inner, ADDS) or len(inner.args) != 2:
        return None
    for x, cubic_term in (inner.args, inner.args[::-1]):
        cube = split_constant(cubic_term, MULS, CUBIC)
        if isinstance(x, fx.Node) and is_call(cube, _POWS) and cube.args[0] is x and near(cube.args[1], 3):
            break
    else:
        return None
    [one_plus] = tanh.users
    if split_constant(one_plus, ADDS, 1.0) is not tanh or len(one_plus.users) != 1:
        return None
    [product] = one_plus.users
    half = other_operand(product, MULS, one_plus)
    if half is None or split_constant(half, MULS, 0.5) is not x:
        return None
    inner_nodes = [cube, cubic_term, inner, scaled, tanh, one_plus, half]
    if any(len(node.users) != 1 for node in inner_nodes):
        return None  # an intermediate value is used elsewhere: the formula must stay
    return x, inner_nodes + [product]


def recognise_tanh_gelu(gm: fx.GraphModule) -> int:
    """Replace each written-out tanh-GELU in ``gm`` (in place) by one GELU call; return how many."""
    gelu = aten.gelu.default if is_aten_graph(gm) else F.gelu
    return replace_formulas(gm, _match, gelu, {"approximate": "tanh"})
