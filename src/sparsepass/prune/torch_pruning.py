"""Models pruned with PyTorch's own APIs, made plain for capture and rewrite.

``torch.nn.utils.prune`` keeps each pruned weight as ``weight_orig`` and ``weight_mask`` and
recomputes ``weight = weight_orig * weight_mask`` in a forward pre-hook; ``torch.ao.pruning``
(through ``torch.nn.utils.parametrize``) computes the weight from ``original`` and a mask on
every access. Either way ``weight`` is a computed tensor: ``copy.deepcopy`` refuses such a
module (every pass copies its graph), and torch.export records the product as graph ops
rather than as a constant. `made_permanent` returns a copy in which every such weight is a
plain parameter holding its current value (what ``torch.nn.utils.prune.remove`` and
``parametrize.remove_parametrizations(..., leave_parametrized=True)`` do), leaving the user's
model as it was; `fold_masked_weights` folds the product in a graph the user exported
themselves, and a model's own ``weight * mask``.
"""

from __future__ import annotations

import copy
import operator

import torch
import torch.fx as fx
from torch.nn.utils import parametrize
from torch.nn.utils import prune as torch_prune


def has_reparametrized_weights(model: torch.nn.Module) -> bool:
    """Whether some submodule of ``model`` computes a weight through a ``torch.nn.utils.prune``
    hook or a ``torch.nn.utils.parametrize`` parametrization."""
    return any(parametrize.is_parametrized(module)
               or any(isinstance(hook, torch_prune.BasePruningMethod) for hook in module._forward_pre_hooks.values())
               for module in model.modules())


def made_permanent(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` with each pruning reparametrization removed (the weight's current
    value kept as a plain parameter); ``model`` itself when it has none."""
    if not has_reparametrized_weights(model):
        return model
    # The computed weights cannot be deep-copied: hand deepcopy their values instead.
    memo = {id(value): value.detach().clone() for module in model.modules()
            for value in vars(module).values() if isinstance(value, torch.Tensor) and not value.is_leaf}
    out = copy.deepcopy(model, memo)
    for module in out.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, torch_prune.BasePruningMethod):
                torch_prune.remove(module, hook._tensor_name)
        if parametrize.is_parametrized(module):
            _unparametrized(module)
    return out


def _unparametrized(module: torch.nn.Module) -> None:
    """Replace ``module``'s parametrizations by plain parameters of their current values, in place.

    Not ``parametrize.remove_parametrizations``: it deletes the property from the module's
    class, which a deep copy shares with the original, and the user's model lost its weight."""
    values = {name: getattr(module, name).detach().clone() for name in module.parametrizations}
    module.__class__ = module.__class__.__bases__[0]  # the class parametrize derived its own from
    del module._modules["parametrizations"]
    for name, value in values.items():
        module.register_parameter(name, torch.nn.Parameter(value, requires_grad=False))


_MULS = (torch.mul, operator.mul, torch.ops.aten.mul.Tensor)
_CASTS = (torch.ops.aten.to.dtype, torch.ops.aten._to_copy.default)


def _attr_node(node):
    """The get_attr node behind ``node``, looking through a dtype cast (export casts the mask)."""
    if isinstance(node, fx.Node) and node.op == "call_function" and node.target in _CASTS:
        node = node.args[0]
    return node if isinstance(node, fx.Node) and node.op == "get_attr" else None


def _weight_path(target: str) -> str | None:
    """The weight a pruning API's stored original stands for ("fc.weight_orig" and
    "fc.parametrizations.weight.original" are "fc.weight"), else None."""
    if target.endswith("_orig"):
        return target.removesuffix("_orig")
    owner, marker, rest = target.partition(".parametrizations.")
    if not marker and target.startswith("parametrizations."):
        owner, marker, rest = "", "parametrizations.", target.removeprefix("parametrizations.")
    if marker and rest.endswith(".original"):
        return f"{owner}.{rest.removesuffix('.original')}" if owner else rest.removesuffix(".original")
    return None


def _masks(path: str, mask: str) -> bool:
    """Whether ``mask`` is the mask stored for weight ``path`` by either pruning API."""
    owner, _, name = path.rpartition(".")
    prefix = f"{owner}." if owner else ""
    return mask == f"{path}_mask" or mask.startswith(f"{prefix}parametrizations.{name}.")


#: Ops whose argument 1 is a layer's weight: where a product of two constants is a masked weight.
_WEIGHT_USERS = (torch.nn.functional.linear, torch._C._nn.linear, torch.ops.aten.linear.default,
                 torch.nn.functional.conv2d, torch.conv2d, torch.ops.aten.conv2d.default)


def _value(gm: fx.GraphModule, target: str) -> torch.Tensor:
    return (gm.get_parameter(target) if target in dict(gm.named_parameters()) else gm.get_buffer(target)).detach()


def fold_masked_weights(gm: fx.GraphModule) -> int:
    """Each product of two constants that only serves as a layer's weight (``weight_orig *
    weight_mask`` in a graph torch.export captured from a ``torch.nn.utils.prune`` model,
    ``mask * original`` from ``torch.ao.pruning``, ``self.weight * self.mask`` in a model's own
    masked layer) becomes one constant (in place), so the layer reads a constant weight; returns
    how many were folded. The pruning APIs' products are named after the weight they stand for,
    others ``<weight>_masked``."""
    folded = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target not in _MULS or len(node.args) != 2 or not node.users \
                or any(user.target not in _WEIGHT_USERS or user.args[1:2] != (node,) for user in node.users):
            continue
        attrs = [_attr_node(a) for a in node.args]
        if None in attrs:
            continue
        values = [_value(gm, a.target) for a in attrs]
        if not all(v.is_floating_point() for v in values):
            continue
        mask, orig = sorted(attrs, key=lambda a: _weight_path(a.target) is not None
                            or a.target in dict(gm.named_parameters()))
        path = _weight_path(orig.target)
        if path is None or not _masks(path, mask.target):
            path = f"{orig.target}_masked"
        owner, _, name = path.rpartition(".")
        module = gm.get_submodule(owner) if owner else gm
        if hasattr(module, name):
            continue
        module.register_buffer(name, values[0] * values[1])
        with gm.graph.inserting_before(node):
            constant = gm.graph.get_attr(path)
        node.replace_all_uses_with(constant)
        gm.graph.erase_node(node)
        folded += 1
    if folded:
        gm.graph.eliminate_dead_code()
        gm.recompile()
    return folded
