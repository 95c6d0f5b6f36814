"""Checks and clean-ups a graph gets before sparsepass rewrites it.

``check_eval_mode`` refuses a graph captured or run in training mode (naming
the module or aten op); ``remove_identity_dropout`` drops inference dropouts
so that fusion sees a linear and the add after it as neighbours.
"""

from __future__ import annotations

import torch
import torch.fx as fx

from sparsepass.errors import SparsifyError

_TRAINING_MSG = ("is in training mode; call model.eval() before capturing it (sparse kernels are "
                 "inference-only: no gradients, no dropout)")

#: aten ops whose ``train``/``training`` flag (argument index) shows how a graph was captured.
_TRAIN_FLAG_ARGS = {
    torch.ops.aten.dropout.default: 2,
    torch.ops.aten.batch_norm.default: 5,
    torch.ops.aten._native_batch_norm_legit_functional.default: 5,
}


def is_aten_graph(gm: fx.GraphModule) -> bool:
    return any(isinstance(n.target, torch._ops.OpOverload) and n.target.namespace == "aten"
               for n in gm.graph.nodes if n.op == "call_function")


def check_eval_mode(gm: fx.GraphModule) -> None:
    """Raise SparsifyError naming the first module (or aten node) captured in training mode.

    An exported (aten-level) graph bakes the mode into its ops, and its modules'
    ``training`` flags mean nothing, so there the ops' own flags are checked.
    """
    if not is_aten_graph(gm):
        # The root's flag was baked into traced code (e.g. dropout's `training`); called
        # modules use theirs at run time. Containers fx creates on the way are not checked.
        if gm.training:
            raise SparsifyError("<root>", "module " + _TRAINING_MSG)
        for node in gm.graph.nodes:
            if node.op == "call_module":
                for name, sub in gm.get_submodule(node.target).named_modules(prefix=node.target):
                    if sub.training:
                        raise SparsifyError(name, "module " + _TRAINING_MSG)
        return
    for node in gm.graph.nodes:
        index = _TRAIN_FLAG_ARGS.get(node.target)
        if index is not None and len(node.args) > index and node.args[index] is True:
            where = node.meta.get("nn_module_stack", {})
            layer = list(where.values())[-1][0] if where else node.name
            raise SparsifyError(layer, f"{node.target} was captured with training=True: the model " + _TRAINING_MSG)


def _is_identity_dropout(gm: fx.GraphModule, node: fx.Node) -> bool:
    """Dropout in inference: aten.dropout(train=False), F.dropout(training=False), an eval nn.Dropout."""
    if node.op == "call_module":
        return isinstance(gm.get_submodule(node.target), torch.nn.Dropout)  # eval: checked already
    if node.op != "call_function":
        return False
    if node.target is torch.ops.aten.dropout.default:
        return len(node.args) > 2 and node.args[2] is False
    if node.target is torch.nn.functional.dropout:
        return node.kwargs.get("training", node.args[2] if len(node.args) > 2 else True) is False
    return False


def remove_identity_dropout(gm: fx.GraphModule) -> int:
    """Drop eval-mode dropouts (they return their input) so fusion sees through them."""
    removed = 0
    for node in list(gm.graph.nodes):
        if _is_identity_dropout(gm, node):
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
            removed += 1
    return removed
