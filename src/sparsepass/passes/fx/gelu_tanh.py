"""The tanh-approximate GELU written out as arithmetic, recognised as one GELU call.

GPT-2 and other Hugging Face models compute ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``
op by op (``NewGELUActivation``): eight elementwise ops, whose scalar ``tanh``
alone took a quarter of a sparsified GPT-2 block on a CPU. The same function is
``F.gelu(x, approximate="tanh")``; once it is one node, a sparse kernel before it
folds it into its epilogue (and where none does, PyTorch's vectorised GELU runs).
The match is structural and accepts either operand order of each ``*`` and ``+``
(symbolic_trace keeps Python's order, torch.export normalises it).
"""

from __future__ import annotations

import operator

import torch
import torch.fx as fx
import torch.nn.functional as F

from sparsepass.passes.fx.preflight import is_aten_graph
from sparsepass.passes.gelu_formula import CUBIC, SQRT_2_OVER_PI, near

aten = torch.ops.aten

_MULS = (operator.mul, torch.mul, aten.mul.Tensor)
_ADDS = (operator.add, torch.add, aten.add.Tensor)
_POWS = (operator.pow, torch.pow, aten.pow.Tensor_Scalar)
_TANHS = (torch.tanh, aten.tanh.default)


def _is(node, functions, method: str | None = None) -> bool:
    if not isinstance(node, fx.Node) or node.kwargs:
        return False
    return (node.op == "call_function" and node.target in functions) or (
        method is not None and node.op == "call_method" and node.target == method)


def _split(node, functions, constant: float):
    """The tensor operand of ``node = tensor (op) constant`` (either order), else None."""
    if not _is(node, functions) or len(node.args) != 2:
        return None
    a, b = node.args
    if near(b, constant) and isinstance(a, fx.Node):
        return a
    if near(a, constant) and isinstance(b, fx.Node):
        return b
    return None


def _other(node, functions, known: fx.Node):
    """The operand of a binary ``node`` that is not ``known``, else None."""
    if not _is(node, functions) or len(node.args) != 2 or known not in node.args:
        return None
    a, b = node.args
    return b if a is known else a


def _match(tanh: fx.Node) -> tuple[fx.Node, list[fx.Node]] | None:
    """(x, the formula's nodes) when ``tanh`` is the core of a tanh-GELU of x."""
    if not _is(tanh, _TANHS, "tanh") or len(tanh.args) != 1 or len(tanh.users) != 1:
        return None
    scaled = tanh.args[0]
    inner = _split(scaled, _MULS, SQRT_2_OVER_PI)
    if inner is None or not _is(inner, _ADDS) or len(inner.args) != 2:
        return None
    for x, cubic_term in (inner.args, inner.args[::-1]):
        cube = _split(cubic_term, _MULS, CUBIC)
        if isinstance(x, fx.Node) and _is(cube, _POWS) and cube.args[0] is x and near(cube.args[1], 3):
            break
    else:
        return None
    [one_plus] = tanh.users
    if _split(one_plus, _ADDS, 1.0) is not tanh or len(one_plus.users) != 1:
        return None
    [product] = one_plus.users
    half = _other(product, _MULS, one_plus)
    if half is None or _split(half, _MULS, 0.5) is not x:
        return None
    inner_nodes = [cube, cubic_term, inner, scaled, tanh, one_plus, half]
    if any(len(node.users) != 1 for node in inner_nodes):
        return None  # an intermediate value is used elsewhere: the formula must stay
    return x, inner_nodes + [product]


def recognise_tanh_gelu(gm: fx.GraphModule) -> int:
    """Replace each written-out tanh-GELU in ``gm`` (in place) by one GELU call; return how many."""
    aten_level = is_aten_graph(gm)
    found = 0
    for node in list(gm.graph.nodes):
        if node.graph is not gm.graph:
            continue
        match = _match(node)
        if match is None:
            continue
        x, nodes = match
        product = nodes[-1]
        with gm.graph.inserting_after(product):
            if aten_level:
                gelu = gm.graph.call_function(aten.gelu.default, (x,), {"approximate": "tanh"})
            else:
                gelu = gm.graph.call_function(F.gelu, (x,), {"approximate": "tanh"})
        gelu.meta.update(product.meta)
        product.replace_all_uses_with(gelu)
        for dead in reversed(nodes):
            gm.graph.erase_node(dead)
        found += 1
    if found:
        gm.graph.lint()
        gm.recompile()
    return found
