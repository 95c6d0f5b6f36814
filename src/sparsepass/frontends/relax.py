"""From a PyTorch model to a Relax IRModule with constant weights (what the Relax passes rewrite)."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from sparsepass.errors import SparsifyError
from sparsepass.frontends.dynamic import export_dynamic_shapes, narrowed_to_symbolic
from sparsepass.frontends.relax_bounds import mark_inbound_slices
from sparsepass.passes.analysis import as_array
from sparsepass.passes.relax.names import digest, with_names
from sparsepass.prune.torch_pruning import made_permanent


def to_relax(model: torch.nn.Module, example_inputs: Sequence[Any], *, dynamic_shapes: Any = None):
    """Export ``model`` with torch.export and import it into Relax, weights as constants.

    ``dynamic_shapes`` says which input dims stay symbolic in the module (torch.export's
    argument, or ``"auto"`` for every dim the model allows, as in `trace`); without it the
    module is specialised to the example's shapes.

    Raises SparsifyError naming the model when it is in training mode, when
    torch.export fails, or when TVM's importer does not support one of its ops.
    """
    from tvm.relax.frontend.torch import from_exported_program

    name = type(model).__name__
    model = made_permanent(model)  # torch.nn.utils.prune's masked weights as constants
    for sub_name, sub in model.named_modules():
        if sub.training:
            raise SparsifyError(sub_name or f"<root> ({name})",
                                "module is in training mode; call model.eval() first")
    try:
        program = torch.export.export(model, tuple(example_inputs),
                                      dynamic_shapes=export_dynamic_shapes(dynamic_shapes, example_inputs))
        if dynamic_shapes is not None:  # again, with the dims export specialised as plain ints
            program = torch.export.export(model, tuple(example_inputs),
                                          dynamic_shapes=narrowed_to_symbolic(program, example_inputs))
    except Exception as err:
        first = str(err).splitlines()[0] if str(err) else ""
        raise SparsifyError(f"<root> ({name})", f"torch.export failed: {type(err).__name__}: {first}. "
                            "Fix the Python control flow on tensor values it names, or export "
                            "a submodule.") from err
    _integer_cumsums_count_in_int64(program)
    try:
        mod = from_exported_program(program, keep_params_as_input=False)
    except Exception as err:
        first = str(err).splitlines()[0] if str(err) else ""
        half = sorted({str(t.dtype) for t in model.state_dict().values()
                       if t.dtype in (torch.float16, torch.bfloat16)})
        hint = (f" (the model holds {', '.join(half)} weights, which TVM 0.27's importer mixes with "
                "float32; sparsify half-precision models through the torch.fx path, "
                "passes.sparsify_graph)") if half else ""
        raise SparsifyError(f"<root> ({name})", f"TVM's torch importer failed: {type(err).__name__}: "
                            f"{first}{hint}") from err
    mod = mod if dynamic_shapes is None else mark_inbound_slices(mod)
    return with_names(mod, _weight_names(model))


def _weight_names(model: torch.nn.Module) -> dict[str, str]:
    """Digest -> layer name of each weight a sparsepass pass may rewrite or report (2-D to 5-D:
    linear layers and convs)."""
    names = {}
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if 2 <= tensor.dim() <= 5 and tensor.dtype.is_floating_point:
            names.setdefault(digest(as_array(tensor)), name.removesuffix(".weight"))
    return names


def _integer_cumsums_count_in_int64(program) -> None:
    """Make PyTorch's implicit int64 result of a bool/integer ``cumsum`` explicit, in place.

    TVM 0.27's importer keeps the input dtype when ``dtype`` is not given: a bool cumsum (the
    attention masks transformers builds for GPT-2 and LLaMA) became a bool tensor that OR-ed
    instead of counting, with bool propagated to what follows, and did not compile."""
    for node in program.graph_module.graph.nodes:
        if node.op != "call_function" or node.target is not torch.ops.aten.cumsum.default:
            continue
        value = node.args[0].meta.get("val") if isinstance(node.args[0], torch.fx.Node) else None
        integral = value is not None and not value.dtype.is_floating_point and not value.dtype.is_complex
        if integral and node.kwargs.get("dtype") is None:
            node.kwargs = {**node.kwargs, "dtype": torch.int64}
