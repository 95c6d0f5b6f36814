"""ReorderFilters (PCONV): permute conv output filters so contiguous filter ranges carry equal work.

The pattern conv kernel splits filters across threads in contiguous ranges; a
pruned layer's filters keep different numbers of kernels, so a range of heavy
filters makes one thread the straggler. This pass orders each channel group's
filters by recursive bisection into equal-count halves of equal work, so any
power-of-two split into contiguous ranges is balanced, and absorbs the
permutation so the graph's outputs never change:

- tensors that must share one channel order form a group (a networkx
  connected component): a conv's output, the BatchNorm/ReLU after it, both
  operands and the result of a residual add;
- a group is permuted only if every producer in it is a Conv2d with constant
  weights (its filters and bias are permuted); BatchNorms in it permute their
  statistics; convs reading it permute their input channels; and only if no
  1x1 conv producing or reading it loses its block shape (balance.keeps_blocks);
- any other consumer (pooling, flatten, the graph output, an unknown op) gets
  one gather back to the original order, which the report lists.
"""

from __future__ import annotations

import copy
import dataclasses
import operator

import networkx as nx
import torch
import torch.fx as fx
import torch.nn as nn

from sparsepass.passes.analysis import as_array
from sparsepass.passes.balance import balanced_order, imbalance, keeps_blocks
from sparsepass.passes.fx.activations import activation_name

# Besides every activation a kernel can fuse (``activation_name``): elementwise, order-keeping.
_ELEMENTWISE_MODULES = (nn.Sigmoid, nn.Identity)
_ELEMENTWISE_FUNCTIONS = (torch.sigmoid,)
_ADDS = (operator.add, torch.add)


@dataclasses.dataclass(frozen=True)
class GroupReport:
    """What ReorderFilters did with one channel group."""

    producers: tuple[str, ...]
    permuted: bool
    reason: str
    gathers: tuple[str, ...] = ()
    imbalance_before: float = 0.0  # heavier half's share of the work, 0.5 = balanced
    imbalance_after: float = 0.0


def _module(gm, node):
    return gm.get_submodule(node.target) if node.op == "call_module" else None


def _is_conv(gm, node) -> bool:
    return isinstance(_module(gm, node), nn.Conv2d) and _module(gm, node).groups == 1


def _passes_channels(gm, node) -> bool:
    """Ops whose output has the channel order of their (first) input."""
    module = _module(gm, node)
    if isinstance(module, (nn.BatchNorm2d, *_ELEMENTWISE_MODULES)) or activation_name(node, gm) is not None:
        return True
    if node.op == "call_function" and node.target in _ELEMENTWISE_FUNCTIONS:
        return True
    return node.op == "call_method" and node.target == "sigmoid"


def _is_add(node) -> bool:
    return (node.op == "call_function" and node.target in _ADDS and len(node.args) == 2
            and all(isinstance(a, fx.Node) for a in node.args) and not node.kwargs)


def channel_groups(gm: fx.GraphModule) -> list[set[fx.Node]]:
    """Sets of nodes whose outputs must share one channel order (conv outputs and what follows)."""
    graph = nx.Graph()
    for node in gm.graph.nodes:
        if _is_conv(gm, node):
            graph.add_node(node)
        elif _passes_channels(gm, node) and isinstance(node.args[0], fx.Node):
            graph.add_edge(node, node.args[0])
        elif _is_add(node):
            graph.add_edge(node, node.args[0])
            graph.add_edge(node, node.args[1])
    return [set(component) for component in nx.connected_components(graph)]


def _kernel_work(conv: nn.Conv2d) -> torch.Tensor:
    return (conv.weight.detach() != 0).reshape(conv.out_channels, -1).sum(dim=1).double()


def _bsr_matrices(gm: fx.GraphModule, group: set[fx.Node]) -> list[tuple[torch.Tensor, int]]:
    """The [out, in] weights of the 1x1 convs producing ``group`` (rows permuted) and reading it
    (columns permuted), which run as BSR with blocks to keep."""
    at = [(_module(gm, n), 0) for n in group if _is_conv(gm, n)]
    at += [(_module(gm, user), 1) for n in group for user in n.users
           if user not in group and _is_conv(gm, user) and user.args[0] is n]
    return [(as_array(conv.weight.reshape(conv.out_channels, conv.in_channels)), axis)
            for conv, axis in at if conv.kernel_size == (1, 1)]


def _permute_group(gm: fx.GraphModule, group: set[fx.Node], perm: torch.Tensor) -> list[str]:
    """Apply ``perm`` to producers and BNs of ``group``; fix its consumers; return gathers made."""
    inverse = torch.argsort(perm)
    with torch.no_grad():
        for node in group:
            module = _module(gm, node)
            if isinstance(module, nn.Conv2d):
                module.weight.copy_(module.weight[perm])
                if module.bias is not None:
                    module.bias.copy_(module.bias[perm])
            elif isinstance(module, nn.BatchNorm2d):
                for tensor in (module.weight, module.bias, module.running_mean, module.running_var):
                    if tensor is not None:
                        tensor.copy_(tensor[perm])
    gathers = []
    index_name = f"_sparsepass_unpermute_{len([n for n, _ in gm.named_buffers() if 'unpermute' in n])}"
    gm.register_buffer(index_name, inverse)
    for node in list(group):
        for user in list(node.users):
            if user in group:
                continue
            if _is_conv(gm, user) and user.args[0] is node:
                conv = _module(gm, user)
                with torch.no_grad():
                    conv.weight.copy_(conv.weight[:, perm])
                continue
            with gm.graph.inserting_after(node):
                index = gm.graph.get_attr(index_name)
            with gm.graph.inserting_after(index):
                restored = gm.graph.call_function(torch.index_select, (node, 1, index))
            user.replace_input_with(node, restored)
            gathers.append(f"{node.name} -> {user.name}")
    return gathers


def reorder_filters(gm: fx.GraphModule) -> fx.GraphModule:
    """A copy of ``gm`` whose pattern-sparse conv groups have balanced filter order.

    ``result.sparsepass_reorder`` lists a GroupReport per channel group.
    """
    out = copy.deepcopy(gm)
    reports = []
    for group in channel_groups(out):
        producers = [n for n in group if not (_passes_channels(out, n) or _is_add(n))]
        names = tuple(sorted(n.name for n in producers))
        not_conv = [n.name for n in producers if not _is_conv(out, n)]
        if not_conv or not producers:
            reports.append(GroupReport(names, False, f"produced by {', '.join(not_conv)} (not a conv)"))
            continue
        convs = [_module(out, n) for n in producers]
        if len({c.out_channels for c in convs}) != 1:
            reports.append(GroupReport(names, False, "producers disagree on the channel count"))
            continue
        work = sum(_kernel_work(c) for c in convs)
        if bool((work == work[0]).all()):
            reports.append(GroupReport(names, False, "every filter has the same work already"))
            continue
        perm = balanced_order(work)
        if not keeps_blocks(_bsr_matrices(out, group), perm):
            reports.append(GroupReport(names, False, "a balanced order would break the blocks of a sparse 1x1 conv"))
            continue
        gathers = _permute_group(out, group, perm)
        reports.append(GroupReport(names, True, "filters reordered for balanced work", tuple(gathers),
                                   imbalance(work), imbalance(work[perm])))
    out.graph.lint()
    out.recompile()
    out.sparsepass_reorder = tuple(reports)
    return out
