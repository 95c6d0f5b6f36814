"""compact_channels: physically remove channels that pruning made dead.

A channel is the pair (tensor, index along its channel dimension). Channels
that must be removed together (a conv output and the BatchNorm/ReLU after it,
the operands and result of a residual add, a concat's input and its slot in
the output, a flatten's input channel and its features) are linked in a
networkx graph; each connected component is a unit of removal. A component
is removed when the removal is exact:

- every channel of it that some consumer actually reads (a conv/linear with a
  non-zero weight column for it) is identically zero: produced by an all-zero
  filter with a zero bias, kept zero by zero-preserving ops (ReLU, pooling,
  a BatchNorm whose shift is zero at that channel), added to zeros; and
- none of it reaches a graph output or an op whose channel mapping is
  unknown (those pin the component, and the report says which op).

Conv2d (groups 1), Linear and BatchNorm2d modules shrink physically; readers
lose the input columns. Dead channels that are not whole blocks of a
block-sparse (or whole groups of an N:M) weight stay, so that its kernel keeps
its structure (`compact_structure`). Removing a consumer's column can leave its producer
unread, so the search repeats until nothing changes.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import operator

import networkx as nx
import torch
import torch.fx as fx
import torch.nn as nn
from torch.fx.passes.shape_prop import ShapeProp

from sparsepass.passes.analysis import as_array
from sparsepass.passes.compact_structure import structure_breaking
from sparsepass.passes.fx.activations import activation_name

# Besides these, every activation a kernel can fuse (``activation_name``) maps 0 to 0.
_ZERO_PRESERVING_MODULES = (nn.Identity, nn.Dropout,
                            nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_ZERO_PRESERVING_FUNCTIONS = (nn.functional.adaptive_avg_pool2d, nn.functional.max_pool2d)
_ADDS = (operator.add, torch.add)


@dataclasses.dataclass(frozen=True)
class CompactedLayer:
    name: str
    before: tuple[int, ...]
    after: tuple[int, ...]


def _rank(node: fx.Node) -> int | None:
    shape = getattr(node.meta.get("tensor_meta"), "shape", None)
    return len(shape) if shape is not None else None


def _channel_dim(node: fx.Node) -> int:
    """Channels are dim 1 of NCHW tensors (convs) and the last dim otherwise (linears)."""
    return 1 if _rank(node) == 4 else -1


def _channels(node: fx.Node) -> int | None:
    shape = getattr(node.meta.get("tensor_meta"), "shape", None)
    return int(shape[_channel_dim(node)]) if shape is not None and len(shape) >= 2 else None


def _module(gm, node):
    return gm.get_submodule(node.target) if node.op == "call_module" else None


def _is_layer(gm, node) -> bool:
    module = _module(gm, node)
    return isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1
                                             and module.padding_mode == "zeros")


def _bn_shift(bn: nn.BatchNorm2d) -> torch.Tensor:
    """What an eval BatchNorm outputs for a zero input, per channel."""
    scale = (bn.weight if bn.affine else 1) / torch.sqrt(bn.running_var + bn.eps)
    shift = -bn.running_mean * scale
    return (shift + bn.bias if bn.affine else shift).detach()


def _pass_through(gm, node) -> bool:
    module = _module(gm, node)
    if isinstance(module, nn.BatchNorm2d):
        return _rank(node) == 4
    if isinstance(module, _ZERO_PRESERVING_MODULES) or activation_name(node, gm) is not None:
        return True
    if node.op == "call_function" and node.target in _ZERO_PRESERVING_FUNCTIONS:
        return True
    return node.op == "call_method" and node.target == "mean" and tuple(d % 4 for d in _dims(node)) == (2, 3)


def _dims(node) -> tuple:
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", ())
    return tuple(dims) if isinstance(dims, (tuple, list)) else (dims,)


class _Analysis:
    """Channel atoms of one graph: equivalences, zero values, readers, pins.

    Only layers read channels (a non-zero weight column); what a pass-through
    op reads lies in the same component as what it writes, so a component is
    judged as a whole (see removable_components).
    """

    def __init__(self, gm: fx.GraphModule):
        self.gm = gm
        self.graph = nx.Graph()
        self.zero: dict[tuple[str, int], bool] = {}
        self.read: set[tuple[str, int]] = set()
        self.pinned: dict[tuple[str, int], str] = {}
        self.width: dict[str, int] = {}
        for node in gm.graph.nodes:
            self.visit(node)

    def atoms(self, node):
        return [(node.name, c) for c in range(self.width.get(node.name, 0))]

    def carries(self, node) -> bool:
        return isinstance(node, fx.Node) and node.name in self.width

    def add_atoms(self, node, zero_of):
        self.width[node.name] = _channels(node)
        for c in range(self.width[node.name]):
            self.graph.add_node((node.name, c))
            self.zero[(node.name, c)] = zero_of(c)

    def pin(self, node, why: str):
        for atom in self.atoms(node):
            self.pinned.setdefault(atom, why)

    def visit(self, node: fx.Node):  # noqa: C901 (one branch per kind of op, in one place)
        gm, inputs = self.gm, [a for a in node.all_input_nodes if self.carries(a)]
        if _is_layer(gm, node) and _channels(node) is not None:
            module = _module(gm, node)
            x = node.args[0]
            if self.carries(x) and isinstance(module, nn.Linear) and _rank(x) == 4:
                self.pin(x, f"{node.name} (a linear over an NCHW tensor's last dim)")
            elif self.carries(x):
                columns = module.weight.detach().reshape(module.weight.shape[0], module.weight.shape[1], -1)
                used = columns.ne(0).any(dim=(0, 2))
                self.read.update((x.name, c) for c in range(self.width[x.name]) if bool(used[c]))
            rows = module.weight.detach().reshape(module.weight.shape[0], -1).ne(0).any(dim=1)
            bias = module.bias.detach() if module.bias is not None else torch.zeros(len(rows))
            self.add_atoms(node, lambda c: not bool(rows[c]) and bool(bias[c] == 0))
        elif _pass_through(gm, node) and self.carries(node.args[0]) and _channels(node) is not None:
            x, module = node.args[0], _module(gm, node)
            shift = _bn_shift(module) if isinstance(module, nn.BatchNorm2d) else None
            self.add_atoms(node, lambda c: self.zero[(x.name, c)] and (shift is None or bool(shift[c] == 0)))
            self.graph.add_edges_from(zip(self.atoms(x), self.atoms(node)))
        elif node.op == "call_function" and node.target in _ADDS and len(inputs) == 2 \
                and len(node.args) == 2 and _channels(node) is not None \
                and self.width[node.args[0].name] == self.width[node.args[1].name] == _channels(node) \
                and _rank(node.args[0]) == _rank(node.args[1]) == _rank(node):
            a, b = node.args
            self.add_atoms(node, lambda c: self.zero[(a.name, c)] and self.zero[(b.name, c)])
            self.graph.add_edges_from(zip(self.atoms(a), self.atoms(node)))
            self.graph.add_edges_from(zip(self.atoms(b), self.atoms(node)))
        elif node.op == "call_function" and node.target is torch.cat and inputs \
                and all(self.carries(a) for a in node.args[0]) and _cat_on_channels(node):
            parts = node.args[0]
            sources = [(part, c) for part in parts for c in range(self.width[part.name])]
            self.add_atoms(node, lambda i: self.zero[(sources[i][0].name, sources[i][1])])
            self.graph.add_edges_from(((p.name, c), (node.name, i)) for i, (p, c) in enumerate(sources))
        elif _is_flatten(node) and self.carries(node.args[0]):
            x = node.args[0]
            per = math.prod(x.meta["tensor_meta"].shape[2:])
            self.add_atoms(node, lambda i: self.zero[(x.name, i // per)])
            self.graph.add_edges_from(((x.name, i // per), (node.name, i)) for i in range(self.width[node.name]))
        else:
            why = "the graph's output" if node.op == "output" else f"{node.op} {node.name} (channel mapping unknown)"
            for a in inputs:
                self.pin(a, why)


def _cat_on_channels(node) -> bool:
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    rank = _rank(node)
    return rank is not None and dim % rank == _channel_dim(node) % rank


def _is_flatten(node) -> bool:
    is_call = (node.op == "call_function" and node.target is torch.flatten) or \
              (node.op == "call_method" and node.target == "flatten")
    start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
    meta = node.args[0].meta.get("tensor_meta") if is_call and isinstance(node.args[0], fx.Node) else None
    return is_call and start == 1 and meta is not None and len(meta.shape) == 4 and _channels(node) is not None


def removable_components(analysis: _Analysis) -> tuple[list[set], list[tuple[set, str]]]:
    """(components to remove, components kept with the reason) among those that look dead."""
    remove, kept = [], []
    for component in nx.connected_components(analysis.graph):
        dead = all(analysis.zero[a] or a not in analysis.read for a in component)
        if not dead:
            continue
        pins = {analysis.pinned[a] for a in component if a in analysis.pinned}
        if pins and all(analysis.zero[a] for a in component):
            kept.append((component, f"zero channels kept: they reach {sorted(pins)[0]}"))
        elif pins:
            continue  # unread but pinned: an output or an unknown op's input, not dead
        else:
            remove.append(component)
    return remove, kept


def _shrink(gm: fx.GraphModule, removed: dict[str, set[int]], log: dict[str, CompactedLayer]) -> None:
    for node in gm.graph.nodes:
        module = _module(gm, node)
        out_drop = removed.get(node.name, set())
        x = node.args[0] if node.args else None
        in_drop = removed.get(x.name, set()) if isinstance(x, fx.Node) else set()
        if isinstance(module, (nn.Conv2d, nn.Linear)) and (out_drop or in_drop):
            before = tuple(module.weight.shape)
            keep_out = [c for c in range(module.weight.shape[0]) if c not in out_drop]
            keep_in = [c for c in range(module.weight.shape[1]) if c not in in_drop]
            with torch.no_grad():
                module.weight = nn.Parameter(module.weight[keep_out][:, keep_in].clone())
                if module.bias is not None:
                    module.bias = nn.Parameter(module.bias[keep_out].clone())
            if isinstance(module, nn.Conv2d):
                module.out_channels, module.in_channels = len(keep_out), len(keep_in)
            else:
                module.out_features, module.in_features = len(keep_out), len(keep_in)
            first = log.get(node.target, CompactedLayer(node.target, before, before))
            log[node.target] = CompactedLayer(node.target, first.before, tuple(module.weight.shape))
        elif isinstance(module, nn.BatchNorm2d) and out_drop:
            keep = [c for c in range(module.num_features) if c not in out_drop]
            with torch.no_grad():
                for name in ("weight", "bias", "running_mean", "running_var"):
                    tensor = getattr(module, name)
                    if tensor is not None:
                        setattr(module, name, type(tensor)(tensor[keep].clone()) if isinstance(tensor, nn.Parameter)
                                else tensor[keep].clone())
            module.num_features = len(keep)


def _keep_one_channel_each(remove: list[set], width: dict[str, int]) -> dict[str, set[int]]:
    """Channels to remove per tensor, never all of a tensor's (zero-width layers are fragile)."""
    remove = list(remove)
    while True:
        removed: dict[str, set[int]] = {}
        for component in remove:
            for name, c in component:
                removed.setdefault(name, set()).add(c)
        emptied = [name for name, chans in removed.items() if len(chans) >= width[name]]
        if not emptied:
            return removed
        remove = [comp for comp in remove if (emptied[0], 0) not in comp]


def _keep_structure(gm: fx.GraphModule, remove: list[set], width: dict[str, int], target):
    """(channels to remove per tensor, reasons kept): ``remove`` without the components whose
    removal would break a sparse layer's blocks."""
    reasons = set()
    while True:
        removed = _keep_one_channel_each(remove, width)
        broken = set()
        for node in gm.graph.nodes:
            module = _module(gm, node)
            if not isinstance(module, (nn.Linear, nn.Conv2d)) or module.weight.dim() == 4 and (
                    module.weight.shape[2:] != (1, 1) or module.groups != 1):
                continue
            x = node.args[0]
            rows, cols = removed.get(node.name, set()), removed.get(x.name, set()) if isinstance(x, fx.Node) else set()
            matrix = as_array(module.weight.reshape(module.weight.shape[0], -1))
            bad_rows, bad_cols, structure = structure_breaking(matrix, rows, cols, target)
            if structure:
                reasons.add(f"dead channels kept: removing them would break {node.target}'s {structure}")
                broken |= {(node.name, c) for c in bad_rows} | {(x.name, c) for c in bad_cols}
        if not broken:
            return removed, reasons
        remove = [component for component in remove if not component & broken]


def compact_channels(gm: fx.GraphModule, example_inputs, target=None) -> fx.GraphModule:
    """A copy of ``gm`` with dead channels removed; ``result.sparsepass_compaction`` lists
    (layers with before/after weight shapes, dead channel groups kept and why). ``target``: where
    the sparse layers will run (their kernels' blocks stay whole)."""
    out = copy.deepcopy(gm)
    log: dict[str, CompactedLayer] = {}
    kept_reasons: list[str] = []
    while True:
        ShapeProp(out).propagate(*example_inputs)
        analysis = _Analysis(out)
        remove, kept = removable_components(analysis)
        removed, structure_reasons = _keep_structure(out, remove, analysis.width, target)
        kept_reasons = sorted({why for _, why in kept} | structure_reasons | set(kept_reasons))
        if not removed:
            break
        _shrink(out, removed, log)
        out.recompile()
    out.sparsepass_compaction = (tuple(log.values()), tuple(kept_reasons))
    return out
