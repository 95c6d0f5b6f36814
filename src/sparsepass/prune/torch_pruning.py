"""Models pruned with PyTorch's own ``torch.nn.utils.prune``, made plain for capture and rewrite.

That API keeps each pruned weight as ``weight_orig`` and ``weight_mask`` and recomputes
``weight = weight_orig * weight_mask`` in a forward pre-hook, so ``weight`` is a computed
tensor: ``copy.deepcopy`` refuses the module (every pass copies its graph), and torch.export
records the product as graph ops rather than as a constant. `made_permanent` returns a copy
in which every such weight is a plain parameter holding its masked values, what
``torch.nn.utils.prune.remove`` does, leaving the user's model as it was;
`fold_exported_masks` folds the product in a graph the user exported themselves.
"""

from __future__ import annotations

import copy
import operator

import torch
import torch.fx as fx
from torch.nn.utils import prune as torch_prune


def has_pruning_hooks(model: torch.nn.Module) -> bool:
    """Whether some submodule of ``model`` carries a ``torch.nn.utils.prune`` reparametrization."""
    return any(isinstance(hook, torch_prune.BasePruningMethod)
               for module in model.modules() for hook in module._forward_pre_hooks.values())


def made_permanent(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` with each ``torch.nn.utils.prune`` reparametrization removed (its
    masked weight kept as a plain parameter); ``model`` itself when it has none."""
    if not has_pruning_hooks(model):
        return model
    # The computed weights cannot be deep-copied: hand deepcopy their values instead.
    memo = {id(value): value.detach().clone() for module in model.modules()
            for value in vars(module).values() if isinstance(value, torch.Tensor) and not value.is_leaf}
    out = copy.deepcopy(model, memo)
    for module in out.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, torch_prune.BasePruningMethod):
                torch_prune.remove(module, hook._tensor_name)
    return out


_MULS = (torch.mul, operator.mul, torch.ops.aten.mul.Tensor)
_CASTS = (torch.ops.aten.to.dtype, torch.ops.aten._to_copy.default)


def _attr_node(node):
    """The get_attr node behind ``node``, looking through a dtype cast (export casts the mask)."""
    if isinstance(node, fx.Node) and node.op == "call_function" and node.target in _CASTS:
        node = node.args[0]
    return node if isinstance(node, fx.Node) and node.op == "get_attr" else None


def fold_exported_masks(gm: fx.GraphModule) -> int:
    """In a graph torch.export captured from a ``torch.nn.utils.prune`` model, each
    ``weight_orig * weight_mask`` of two constants becomes one constant ``weight`` (in place), so
    the layer reads a constant weight; returns how many were folded."""
    folded = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target not in _MULS or len(node.args) != 2:
            continue
        attrs = [_attr_node(a) for a in node.args]
        if None in attrs:
            continue
        orig, mask = sorted(attrs, key=lambda a: a.target.endswith("_mask"))
        if not orig.target.endswith("_orig") or not mask.target.endswith("_mask") \
                or orig.target.removesuffix("_orig") != mask.target.removesuffix("_mask"):
            continue
        weight = (gm.get_parameter(orig.target) if orig.target in dict(gm.named_parameters())
                  else gm.get_buffer(orig.target)).detach()
        value = weight * gm.get_buffer(mask.target).to(weight.dtype)
        owner, _, name = orig.target.removesuffix("_orig").rpartition(".")
        module = gm.get_submodule(owner) if owner else gm
        if hasattr(module, name):
            continue
        module.register_buffer(name, value)
        with gm.graph.inserting_before(node):
            constant = gm.graph.get_attr(orig.target.removesuffix("_orig"))
        node.replace_all_uses_with(constant)
        gm.graph.erase_node(node)
        folded += 1
    if folded:
        gm.graph.eliminate_dead_code()
        gm.recompile()
    return folded
