"""Which input dims stay symbolic when sparsepass captures a model with torch.export.

torch.export specialises every dim to the example's size unless told otherwise;
``"auto"`` asks it to keep each dim dynamic that the model allows (Dim.AUTO on
all of them). Dims it then specialises (a hidden size fixed by a weight; a dim
of example size 0 or 1) still come back as constant SymInts, which TVM 0.27's
importer turns into shape variables named "64": `narrowed_to_symbolic` gives the
spec that asks only for the dims that stayed dynamic.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch.export import Dim
from torch.fx.experimental.symbolic_shapes import is_concrete_int
from torch.utils._pytree import tree_map


def export_dynamic_shapes(dynamic_shapes: Any, example_inputs: Sequence[Any]):
    """torch.export's dynamic_shapes; ``"auto"``: Dim.AUTO on every dim of every tensor input."""
    if dynamic_shapes != "auto":
        return dynamic_shapes
    return _per_tensor(example_inputs, lambda index, tensor: {d: Dim.AUTO for d in range(tensor.dim())})


def narrowed_to_symbolic(program: torch.export.ExportedProgram, example_inputs: Sequence[Any]):
    """A dynamic_shapes spec asking for exactly the input dims that are symbolic in ``program``
    (None when none are), for a second export whose other dims are plain ints."""
    user_inputs = set(program.graph_signature.user_inputs)
    symbolic = []
    for node in program.graph_module.graph.nodes:
        if node.op == "placeholder" and node.name in user_inputs:
            shape = getattr(node.meta.get("val"), "shape", ())
            symbolic.append({d for d, size in enumerate(shape) if not is_concrete_int(size)})
    if not any(symbolic):
        return None
    return _per_tensor(example_inputs, lambda index, tensor: {d: Dim.AUTO for d in sorted(symbolic[index])} or None)


def _per_tensor(example_inputs: Sequence[Any], spec):
    """``spec(i, tensor)`` for the i-th tensor among the inputs (in pytree order), None elsewhere."""
    count = [0]

    def one(leaf):
        if not isinstance(leaf, torch.Tensor):
            return None
        count[0] += 1
        return spec(count[0] - 1, leaf)

    return tuple(tree_map(one, tuple(example_inputs)))
