"""Models pruned with torch.nn.utils.prune (weight_orig * weight_mask in a pre-hook) go through
every path: the symbolic graph (which deepcopy refused), a graph the user exported (where the
product was a computed weight, left dense), frontends.trace and to_relax."""

import pytest
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.utils.prune as torch_prune
import tvm

from sparsepass import frontends, passes
from sparsepass.codegen.target import canonical_target, tvm_target
from sparsepass.passes import relax as sp
from sparsepass.prune.torch_pruning import has_pruning_hooks, made_permanent
from sparsepass.testing import assert_equivalent

ALWAYS = passes.SparsifyOptions(cost=passes.CostModel(min_speedup=0.0))


def torch_pruned() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64)).eval()
    for layer in (model[0], model[2]):
        torch_prune.ln_structured(layer, "weight", amount=0.75, n=2, dim=0)  # whole rows
        torch_prune.l1_unstructured(layer, "weight", amount=0.5)  # a PruningContainer of two
    return model


def test_made_permanent_copies_and_leaves_the_model_as_it_was():
    model = torch_pruned()
    plain = made_permanent(model)
    assert has_pruning_hooks(model) and hasattr(model[0], "weight_orig")
    assert not has_pruning_hooks(plain) and not hasattr(plain[0], "weight_orig")
    assert isinstance(plain[0].weight, nn.Parameter)
    assert torch.equal(plain[0].weight, model[0].weight_orig * model[0].weight_mask)
    assert made_permanent(plain) is plain


@pytest.mark.filterwarnings("ignore:The tensor attributes:UserWarning")  # torch.export on the pre-hooks
@pytest.mark.parametrize("capture", ["symbolic_trace", "torch.export"])
def test_a_torch_pruned_model_is_sparsified(capture):
    model, x = torch_pruned(), torch.randn(8, 64)
    graph = fx.symbolic_trace(model) if capture == "symbolic_trace" else torch.export.export(model, (x,)).module()
    fast = passes.sparsify_graph(graph, example_inputs=(x,), options=ALWAYS)
    assert fast.sparsepass_report.rewritten == 2
    assert any("torch.nn.utils.prune" in note for note in fast.sparsepass_report.notes)
    assert_equivalent(model, fast, [x])
    assert has_pruning_hooks(model)  # the user's model keeps its reparametrization


def test_a_torch_pruned_model_through_trace_and_relax():
    host = tvm_target(canonical_target())
    model, x = torch_pruned(), torch.randn(8, 64)
    fast = passes.sparsify_graph(frontends.trace(model, (x,)), example_inputs=(x,), options=ALWAYS)
    assert fast.sparsepass_report.rewritten == 2
    mod = frontends.to_relax(model, (x,))
    with host:
        assert sp.report(sp.SparsifyLinear(options=sp.SparsifyLinearOptions(
            cost=passes.CostModel(min_speedup=0.0)))(mod)).rewritten == 2
    executable = tvm.compile(mod, target=host, relax_pipeline=sp.pipeline())
    assert_equivalent(model, executable, [x])
