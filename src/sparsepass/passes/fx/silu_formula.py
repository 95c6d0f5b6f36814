"""SiLU written out as ``x * sigmoid(x)``, recognised as one SiLU call.

Models written before ``nn.SiLU`` existed (EfficientNet's "swish", YOLO's
``x * torch.sigmoid(x)``) and aten graphs from torch.export (which decompose
``F.silu``) compute SiLU as a sigmoid and a multiply. No sparse kernel takes
that pair as its epilogue, so the conv or linear before it ran its sigmoid and
multiply in PyTorch; as one ``F.silu`` it folds into the kernel. A sigmoid
also used elsewhere stays as written.
"""

from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn.functional as F

from sparsepass.passes.fx.formula_match import MULS, is_call, other_operand, replace_formulas
from sparsepass.passes.fx.preflight import is_aten_graph

aten = torch.ops.aten

_SIGMOIDS = (torch.sigmoid, F.sigmoid, aten.sigmoid.default)


def _match(sigmoid: fx.Node) -> tuple[fx.Node, list[fx.Node]] | None:
    """(x, [sigmoid, product]) when ``sigmoid`` is sigmoid(x) whose only use is x * it."""
    if not is_call(sigmoid, _SIGMOIDS, "sigmoid") or len(sigmoid.args) != 1 or len(sigmoid.users) != 1:
        return None
    x = sigmoid.args[0]
    [product] = sigmoid.users
    if not isinstance(x, fx.Node) or other_operand(product, MULS, sigmoid) is not x:
        return None
    return x, [sigmoid, product]


def recognise_silu(gm: fx.GraphModule) -> int:
    """Replace each ``x * sigmoid(x)`` in ``gm`` (in place) by one SiLU call; return how many."""
    return replace_formulas(gm, _match, aten.silu.default if is_aten_graph(gm) else F.silu, {})
