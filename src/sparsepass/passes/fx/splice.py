"""Splicing a kernel call into a GraphModule: buffers for its arrays, one node for the call.

Shared by every fx rewrite, so that all of them leave the same facts behind:
the report in ``node.meta["sparsepass"]`` and, in ``node.meta["sparsepass_replaces"]``,
the original node whose value the new node computes (used to bisect divergences).
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np
import torch
import torch.fx as fx

#: Key of the facts sparsepass leaves on fx nodes: the LayerReport of a rewritten node.
META_KEY = "sparsepass"
#: Key naming the node of the original graph whose value a rewritten node computes.
REPLACES_KEY = "sparsepass_replaces"


def register_arrays(gm: fx.GraphModule, layer: str, arrays: dict[str, np.ndarray]) -> list[str]:
    """Register ``arrays`` as buffers named after ``layer`` (made unique); return their names."""
    base = "_sparsepass_" + re.sub(r"\W", "_", layer)
    prefix, n = base, 1
    first = next(iter(arrays))
    while hasattr(gm, f"{prefix}_{first}"):
        n += 1
        prefix = f"{base}_{n}"
    names = []
    for field, array in arrays.items():
        gm.register_buffer(f"{prefix}_{field}", torch.from_numpy(np.ascontiguousarray(array)))
        names.append(f"{prefix}_{field}")
    return names


def splice_call(gm: fx.GraphModule, op, last: fx.Node, args: Sequence,
                buffer_names: Sequence[str], report, erase: Sequence[fx.Node]) -> fx.Node:
    """Insert ``op(args[0], *buffers, *args[1:])`` where ``last`` is; it replaces ``last``.

    Not where the fused chain starts: a residual the call takes may be computed after
    that (Phi adds its MLP branch, computed later, to its attention's output projection).
    ``erase`` lists the nodes the call makes dead, in graph order (erased in reverse).
    """
    graph = gm.graph
    with graph.inserting_before(last):
        buffers = [graph.get_attr(name) for name in buffer_names]
        new = graph.call_function(op, (args[0], *buffers, *args[1:]))
    new.meta.update({k: v for k, v in last.meta.items() if k != META_KEY})
    new.meta[META_KEY] = report
    new.meta[REPLACES_KEY] = last.meta.get(REPLACES_KEY, last.name)
    last.replace_all_uses_with(new)
    for node in reversed(list(erase)):
        graph.erase_node(node)
    return new


def chain(first: fx.Node, last: fx.Node) -> list[fx.Node]:
    """The nodes from ``first`` to ``last`` following single users (e.g. conv, add, relu)."""
    nodes = [first]
    while nodes[-1] is not last:
        nodes.append(next(iter(nodes[-1].users)))
    return nodes
