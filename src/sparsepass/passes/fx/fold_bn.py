"""fold_batchnorm: an eval-mode BatchNorm after a conv is folded into the conv's weight and bias.

Uses PyTorch's own folding (``torch.nn.utils.fusion``), so the arithmetic is
exactly ``fuse_conv_bn_eval``'s. Module level (Conv2d -> BatchNorm2d) and
aten level (``aten.conv2d`` -> ``_native_batch_norm_legit_no_training``). A
conv whose output has other users than the BatchNorm is left alone.
"""

from __future__ import annotations

import copy
import operator

import torch
import torch.fx as fx
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_conv_bn_weights

aten = torch.ops.aten
_BN_NO_TRAINING = aten._native_batch_norm_legit_no_training.default


def _attr(gm: fx.GraphModule, node):
    return gm.get_parameter(node.target) if node.target in dict(gm.named_parameters()) \
        else gm.get_buffer(node.target) if node.target in dict(gm.named_buffers()) else getattr(gm, node.target)


def _fold_modules(gm: fx.GraphModule, dtypes) -> int:
    folded = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(gm.get_submodule(node.target), torch.nn.BatchNorm2d):
            continue
        conv_node = node.args[0]
        if not (isinstance(conv_node, fx.Node) and conv_node.op == "call_module"
                and isinstance(gm.get_submodule(conv_node.target), torch.nn.Conv2d)
                and len(conv_node.users) == 1):
            continue
        bn, conv = gm.get_submodule(node.target), gm.get_submodule(conv_node.target)
        if bn.training or conv.training or not bn.track_running_stats or conv.weight.dtype not in dtypes:
            continue
        parent, _, name = conv_node.target.rpartition(".")
        setattr(gm.get_submodule(parent) if parent else gm, name, fuse_conv_bn_eval(conv, bn))
        node.replace_all_uses_with(conv_node)
        gm.graph.erase_node(node)
        folded += 1
    return folded


def _fold_aten(gm: fx.GraphModule, dtypes) -> int:
    folded = 0
    for node in list(gm.graph.nodes):
        if node.target is not _BN_NO_TRAINING:
            continue
        conv_node = node.args[0]
        if not (isinstance(conv_node, fx.Node) and conv_node.target is aten.conv2d.default
                and len(conv_node.users) == 1):
            continue
        getitems = list(node.users)
        if not all(u.target is operator.getitem and u.args[1] == 0 for u in getitems):
            continue
        weight_node = conv_node.args[1]
        bias_node = conv_node.args[2] if len(conv_node.args) > 2 else None
        bn_args = node.args[1:5]
        if weight_node.op != "get_attr" or any(a is not None and a.op != "get_attr" for a in bn_args) \
                or (bias_node is not None and bias_node.op != "get_attr"):
            continue
        gamma, beta, mean, var = (None if a is None else _attr(gm, a).detach() for a in bn_args)
        weight = _attr(gm, weight_node).detach()
        if weight.dtype not in dtypes:
            continue
        bias = None if bias_node is None else _attr(gm, bias_node).detach()
        new_w, new_b = fuse_conv_bn_weights(weight, bias, mean, var, node.args[6], gamma, beta)
        name = f"{weight_node.target.replace('.', '_')}_bn_folded"
        gm.register_buffer(name + "_weight", new_w.detach())
        gm.register_buffer(name + "_bias", new_b.detach())
        with gm.graph.inserting_before(conv_node):
            w_attr, b_attr = gm.graph.get_attr(name + "_weight"), gm.graph.get_attr(name + "_bias")
        conv_node.args = (conv_node.args[0], w_attr, b_attr, *conv_node.args[3:])
        for user in getitems:
            user.replace_all_uses_with(conv_node)
            gm.graph.erase_node(user)
        gm.graph.erase_node(node)
        folded += 1
    return folded


def has_batchnorm(gm: fx.GraphModule) -> bool:
    """Whether ``gm`` calls a BatchNorm2d module or aten's inference batch norm (before copying a
    whole model to fold nothing)."""
    return any((node.op == "call_module" and isinstance(gm.get_submodule(node.target), torch.nn.BatchNorm2d))
               or node.target is _BN_NO_TRAINING for node in gm.graph.nodes)


#: Every floating dtype a conv weight may have.
ALL_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def fold_batchnorm(gm: fx.GraphModule, dtypes=ALL_DTYPES) -> fx.GraphModule:
    """A copy of ``gm`` with every foldable conv -> BatchNorm pair folded (those whose conv weight
    has one of ``dtypes``); ``gm.sparsepass_folded`` counts them.

    Folding rounds the folded weights to the conv's dtype: invisible in float32, but in
    bfloat16 or float16 a folded conv can be several units in the last place off the conv
    and BatchNorm it replaces (sparsify_graph folds float32 convs only)."""
    out = copy.deepcopy(gm)
    folded = _fold_modules(out, dtypes) + _fold_aten(out, dtypes)
    out.graph.eliminate_dead_code()
    out.delete_all_unused_submodules()
    out.recompile()
    out.sparsepass_folded = folded
    return out
