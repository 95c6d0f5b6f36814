"""Structural matching of elementwise formulas written out op by op in an fx graph.

Shared by the recognisers that turn a written-out activation (tanh-GELU, SiLU)
into one call a sparse kernel can fuse. A node matches a set of functions in
both torch-level graphs (``operator.mul``, ``torch.tanh``) and aten-level ones
(``aten.mul.Tensor``), and binary ops in either operand order (symbolic_trace
keeps Python's order, torch.export normalises it).
"""

from __future__ import annotations

import operator

import torch
import torch.fx as fx

from sparsepass.passes.gelu_formula import near

aten = torch.ops.aten

MULS = (operator.mul, torch.mul, aten.mul.Tensor)
ADDS = (operator.add, torch.add, aten.add.Tensor)


def is_call(node, functions, method: str | None = None) -> bool:
    """Whether ``node`` calls one of ``functions`` (or the tensor method ``method``), no kwargs."""
    if not isinstance(node, fx.Node) or node.kwargs:
        return False
    return (node.op == "call_function" and node.target in functions) or (
        method is not None and node.op == "call_method" and node.target == method)


def split_constant(node, functions, constant: float):
    """The tensor operand of ``node = tensor (op) constant`` (either order), else None."""
    if not is_call(node, functions) or len(node.args) != 2:
        return None
    a, b = node.args
    if near(b, constant) and isinstance(a, fx.Node):
        return a
    if near(a, constant) and isinstance(b, fx.Node):
        return b
    return None


def other_operand(node, functions, known: fx.Node):
    """The operand of a binary ``node`` that is not ``known``, else None."""
    if not is_call(node, functions) or len(node.args) != 2 or known not in node.args:
        return None
    a, b = node.args
    return b if a is known else a


def replace_formulas(gm: fx.GraphModule, match, function, kwargs: dict) -> int:
    """Replace (in place) each formula ``match(node)`` finds, ``(x, its nodes, result last)`` or
    None, by one ``function(x, **kwargs)``; return how many."""
    found = 0
    for node in list(gm.graph.nodes):
        if node.graph is not gm.graph:  # erased with an earlier formula
            continue
        matched = match(node)
        if matched is None:
            continue
        x, nodes = matched
        with gm.graph.inserting_after(nodes[-1]):
            call = gm.graph.call_function(function, (x,), kwargs)
        call.meta.update(nodes[-1].meta)
        nodes[-1].replace_all_uses_with(call)
        for dead in reversed(nodes):
            gm.graph.erase_node(dead)
        found += 1
    if found:
        gm.graph.lint()
        gm.recompile()
    return found
