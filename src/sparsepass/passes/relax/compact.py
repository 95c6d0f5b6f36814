"""CompactChannels (Relax): physically remove dead channels, as passes.compact_channels does for fx.

A channel (tensor, index) is linked to the channels it must be removed with
(through ReLU-like ops, bias adds, batch_norm, residual adds); a connected
component is removed when every channel of it that a layer reads is
identically zero (all-zero filters, zero biases and BN shifts) and none is
pinned by an op with an unknown channel mapping or the function's output.
The layers' weights, biases and BN statistics lose those rows/columns; dead
channels that are only part of a sparse layer's kernel blocks stay.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
from tvm import ir, relax

from sparsepass.passes.compact_structure import structure_breaking
from sparsepass.passes.relax.channels import Channels, _value, analyse, substitute_constants


def _atoms(facts: Channels):
    """(equivalence graph over (var, channel), zero flags, read set)."""
    graph, zero, read = nx.Graph(), {}, set()
    for var, width in facts.width.items():
        graph.add_nodes_from((var, c) for c in range(width))
    for var, layer in facts.layers.items():
        w = np.moveaxis(_value(layer.weight), layer.out_axis, 0).reshape(facts.width[var], -1)
        for c in range(facts.width[var]):
            zero[(var, c)] = not w[c].any()
    for reader in facts.readers:
        w = np.moveaxis(_value(reader.weight), reader.in_axis, 0)
        used = w.reshape(w.shape[0], -1).any(axis=1)
        read.update((reader.x, c) for c in range(facts.width[reader.x]) if used[c])
    for var in list(facts.through) + list(facts.adds):
        _zero_and_link(facts, var, graph, zero)
    return graph, zero, read


def _zero_and_link(facts, var, graph, zero):
    if var in facts.adds:
        a, b = facts.adds[var]
        for c in range(facts.width[var]):
            zero[(var, c)] = zero.get((a, c), False) and zero.get((b, c), False)
            graph.add_edge((a, c), (var, c))
            graph.add_edge((b, c), (var, c))
        return
    source, shift, _ = facts.through[var]
    for c in range(facts.width[var]):
        zero[(var, c)] = zero.get((source, c), False) and (shift is None or shift[c] == 0)
        graph.add_edge((source, c), (var, c))


def removable(facts: Channels, target=None) -> dict:
    """var -> channel indices to remove (never all of a tensor's, never part of a sparse
    layer's kernel blocks: `compact_structure`)."""
    graph, zero, read = _atoms(facts)
    components = [component for component in nx.connected_components(graph)
                  if not any(var in facts.pinned for var, _ in component)
                  and all(zero.get(a, False) or a not in read for a in component)]
    while True:
        remove: dict = {}
        for component in components:
            for var, c in component:
                remove.setdefault(var, set()).add(c)
        broken = _breaking_blocks(facts, remove, target)
        if not broken:
            break
        components = [component for component in components if not component & broken]
    if any(len(chans) >= facts.width[var] for var, chans in remove.items()):
        return {}  # would empty a tensor: leave this function alone rather than half-compact it
    return remove


def _breaking_blocks(facts: Channels, remove: dict, target) -> set:
    """The (var, channel) atoms of ``remove`` that would break a 2-D layer's kernel blocks."""
    broken = set()
    layers = {layer.var: layer for layer in [*facts.layers.values(), *facts.readers]}
    for layer in layers.values():
        if any(k != 1 for k in layer.kernel):
            continue  # a 3x3 conv's filters have no blocks
        rows, cols = remove.get(layer.var, set()), remove.get(layer.x, set())
        if not rows and not cols:
            continue
        w = np.moveaxis(_value(layer.weight), (layer.out_axis, layer.in_axis), (0, 1))
        bad_rows, bad_cols, _ = structure_breaking(w.reshape(w.shape[0], w.shape[1]), rows, cols, target)
        broken |= {(layer.var, c) for c in bad_rows} | {(layer.x, c) for c in bad_cols}
    return broken


def _slice(value: np.ndarray, axis: int, drop: set) -> np.ndarray:
    keep = [i for i in range(value.shape[axis]) if i not in drop]
    return np.take(value, keep, axis=axis)


def compaction_mapping(facts: Channels, remove: dict) -> dict:
    """old constant -> sliced array, for every constant that carries a removed channel."""
    mapping: dict = {}

    def cut(const, axis, drop):
        base = mapping.get(const, _value(const))
        mapping[const] = _slice(base, axis, drop)

    for var, layer in facts.layers.items():
        if var in remove:
            cut(layer.weight, layer.out_axis, remove[var])
    for reader in facts.readers:
        if reader.x in remove:
            cut(reader.weight, reader.in_axis, remove[reader.x])
    for var, (_, _, consts) in facts.through.items():
        for const in consts:
            value = _value(const)
            axis = next(i for i, d in enumerate(value.shape) if d == facts.width[var]) if value.ndim else 0
            if var in remove:
                cut(const, axis, remove[var])
    return mapping


def compact_module(mod: ir.IRModule, target=None) -> ir.IRModule:
    for _ in range(8):  # to a fixed point (a removed column can leave a filter unread)
        changed = False
        for gvar, func in mod.functions_items():
            if not isinstance(func, relax.Function):
                continue
            facts = analyse(func)
            remove = removable(facts, target)
            if remove:
                mod = substitute_constants(mod, gvar, compaction_mapping(facts, remove))
                changed = True
        if not changed:
            break
    return mod


def CompactChannels(target=None):  # noqa: N802
    """A Relax module pass: dead channels of constant-weight layers removed physically (but
    never part of the kernel blocks the planner picks on ``target`` for a sparse layer)."""

    def transform(mod, _ctx):
        return compact_module(mod, target)

    return ir.transform.module_pass(transform, opt_level=1, name="sparsepass.CompactChannels")
