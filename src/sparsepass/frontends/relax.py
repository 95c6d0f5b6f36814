"""From a PyTorch model to a Relax IRModule with constant weights (what the Relax passes rewrite)."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from sparsepass.errors import SparsifyError


def to_relax(model: torch.nn.Module, example_inputs: Sequence[Any]):
    """Export ``model`` with torch.export and import it into Relax, weights as constants.

    Raises SparsifyError naming the model when it is in training mode, when
    torch.export fails, or when TVM's importer does not support one of its ops.
    """
    from tvm.relax.frontend.torch import from_exported_program

    name = type(model).__name__
    for sub_name, sub in model.named_modules():
        if sub.training:
            raise SparsifyError(sub_name or f"<root> ({name})",
                                "module is in training mode; call model.eval() first")
    try:
        program = torch.export.export(model, tuple(example_inputs))
    except Exception as err:
        first = str(err).splitlines()[0] if str(err) else ""
        raise SparsifyError(f"<root> ({name})", f"torch.export failed: {type(err).__name__}: {first}. "
                            "Fix the Python control flow on tensor values it names, or export "
                            "a submodule.") from err
    try:
        return from_exported_program(program, keep_params_as_input=False)
    except Exception as err:
        first = str(err).splitlines()[0] if str(err) else ""
        raise SparsifyError(f"<root> ({name})", f"TVM's torch importer failed: {type(err).__name__}: "
                            f"{first}") from err
