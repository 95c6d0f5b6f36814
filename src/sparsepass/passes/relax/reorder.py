"""ReorderFilters (Relax): balanced filter order for pattern-sparse conv groups, absorbed.

The same algorithm as passes.reorder_filters on torch.fx: channels that must
share one order (a conv's output and the bias add / batch_norm / ReLU after
it, residual adds) form a group; a group whose producers are all convs is
permuted by recursive bisection into equal-work halves. Filters, bias and BN
constants are permuted, and the convs reading the group permute their input
channels. A group that reaches an op with an unknown channel mapping (or the
output) is left as it is, since here no gather is inserted; so is one whose
permutation would break the blocks of a BSR-run layer (a 1x1 conv or linear
producing the group, by rows, or reading it, by columns): in a ResNet-50 the
4x1 blocks of the 1x1 convs had become 1x1 blocks, 1.4x slower end to end.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import torch
from tvm import ir, relax

from sparsepass.passes.balance import balanced_order, keeps_blocks
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


def _matrix(layer) -> np.ndarray:
    """A 1x1 conv's or linear's weight as [out, in]."""
    w = np.moveaxis(_value(layer.weight), (layer.out_axis, layer.in_axis), (0, 1))
    return w.reshape(w.shape[0], w.shape[1])


def _bsr_matrices(facts: Channels, group: set) -> list[tuple[np.ndarray, int]]:
    """The [out, in] weights of the 1x1 convs and linears at ``group``, with the axis permuted:
    rows of those producing it, columns of those reading it (pattern convs' kernels just move)."""
    at = [(facts.layers[v], 0) for v in group if v in facts.layers]
    at += [(layer, 1) for layer in facts.readers if layer.x in group]
    return [(_matrix(layer), axis) for layer, axis in at if all(k == 1 for k in layer.kernel)]


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
            if perm is not None and keeps_blocks(_bsr_matrices(facts, group), perm):
                permute_group(facts, group, perm, mapping)
        if mapping:
            mod = substitute_constants(mod, gvar, mapping)
    return mod


def ReorderFilters():  # noqa: N802
    """A Relax module pass: pattern-sparse conv groups get a balanced filter order (absorbed)."""

    def transform(mod, _ctx):
        return reorder_module(mod)

    return ir.transform.module_pass(transform, opt_level=1, name="sparsepass.ReorderFilters")
