"""ReorderFilters (Relax): balanced filter order for pattern-sparse conv groups, absorbed.

The same algorithm as passes.reorder_filters on torch.fx: channels that must
share one order (a conv's output and the bias add / batch_norm / ReLU after
it, residual adds) form a group; a group whose producers are all convs is
permuted by recursive bisection into equal-work halves. Filters, bias and BN
constants are permuted, and the convs reading the group permute their input
channels. A group that reaches an op with an unknown channel mapping (or the
output) is left as it is, since here no gather is inserted.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import torch
from tvm import ir, relax

from sparsepass.passes.balance import balanced_order
from sparsepass.passes.relax.channels import Channels, _value, analyse, substitute_constants


def groups(facts: Channels) -> list[set]:
    graph = nx.Graph()
    graph.add_nodes_from(facts.width)
    for var, (source, _, _) in facts.through.items():
        graph.add_edge(var, source)
    for var, (a, b) in facts.adds.items():
        graph.add_edge(var, a)
        graph.add_edge(var, b)
    return [set(c) for c in nx.connected_components(graph)]


def _permutation(facts: Channels, group: set) -> np.ndarray | None:
    producers = [facts.layers[v] for v in group if v in facts.layers]
    sources_ok = all(v in facts.layers or v in facts.through or v in facts.adds for v in group)
    if not producers or not sources_ok or any(v in facts.pinned for v in group):
        return None
    if any(layer.kernel == () for layer in producers):  # only conv filters are reordered
        return None
    work = sum(torch.from_numpy((np.moveaxis(_value(p.weight), p.out_axis, 0) != 0)
                                .reshape(facts.width[p.var], -1).sum(axis=1).astype(np.float64))
               for p in producers)
    if bool((work == work[0]).all()):
        return None
    return balanced_order(work).numpy()


def permute_group(facts: Channels, group: set, perm: np.ndarray, mapping: dict) -> None:
    """Add to ``mapping`` (old constant -> new array) the permutation of ``group``'s channels.

    A conv weight is permuted twice, rows by its output group and columns by its
    input group: both compose in the one ``mapping``.
    """
    def permute(const, axis):
        mapping[const] = np.take(mapping.get(const, _value(const)), perm, axis=axis)

    for var in group:
        if var in facts.layers:
            permute(facts.layers[var].weight, facts.layers[var].out_axis)
        if var in facts.through:
            for const in facts.through[var][2]:
                value = _value(const)
                permute(const, next(i for i, d in enumerate(value.shape) if d == facts.width[var]))
    for reader in facts.readers:
        if reader.x in group:
            permute(reader.weight, reader.in_axis)


def reorder_module(mod: ir.IRModule) -> ir.IRModule:
    for gvar, func in list(mod.functions_items()):
        if not isinstance(func, relax.Function):
            continue
        facts = analyse(func)
        mapping: dict = {}
        for group in groups(facts):
            perm = _permutation(facts, group)
            if perm is not None:
                permute_group(facts, group, perm, mapping)
        if mapping:
            mod = substitute_constants(mod, gvar, mapping)
    return mod


def ReorderFilters():  # noqa: N802
    """A Relax module pass: pattern-sparse conv groups get a balanced filter order (absorbed)."""

    def transform(mod, _ctx):
        return reorder_module(mod)

    return ir.transform.module_pass(transform, opt_level=1, name="sparsepass.ReorderFilters")
