"""Models pruned with PyTorch's own APIs go through every path: torch.nn.utils.prune
(weight_orig * weight_mask in a pre-hook) and torch.ao.pruning (a parametrization computing the
weight). Before, the symbolic graph failed (deepcopy refused the computed weight; the
parametrizations' container read as a module in training mode), a graph the user exported kept
the layers dense (the product was a computed weight), and the user's model must stay usable."""

import pytest
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.utils.prune as torch_prune
import tvm

from sparsepass import frontends, passes
from sparsepass.codegen.target import canonical_target, tvm_target
from sparsepass.passes import relax as sp
from sparsepass.prune.torch_pruning import has_reparametrized_weights, made_permanent
from sparsepass.testing import assert_equivalent

ALWAYS = passes.SparsifyOptions(cost=passes.CostModel(min_speedup=0.0))


def torch_pruned(api: str = "torch.nn.utils.prune") -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64)).eval()
    if api == "torch.ao.pruning":
        from torch.ao.pruning import WeightNormSparsifier

        sparsifier = WeightNormSparsifier(sparsity_level=0.9, sparse_block_shape=(1, 4), zeros_per_block=4)
        sparsifier.prepare(model, [{"tensor_fqn": "0.weight"}, {"tensor_fqn": "2.weight"}])
        sparsifier.step()
        return model
    for layer in (model[0], model[2]):
        torch_prune.ln_structured(layer, "weight", amount=0.75, n=2, dim=0)  # whole rows
        torch_prune.l1_unstructured(layer, "weight", amount=0.5)  # a PruningContainer of two
    return model


def test_made_permanent_copies_and_leaves_the_model_as_it_was():
    model = torch_pruned()
    plain = made_permanent(model)
    assert has_reparametrized_weights(model) and hasattr(model[0], "weight_orig")
    assert not has_reparametrized_weights(plain) and not hasattr(plain[0], "weight_orig")
    assert isinstance(plain[0].weight, nn.Parameter)
    assert torch.equal(plain[0].weight, model[0].weight_orig * model[0].weight_mask)
    assert made_permanent(plain) is plain


@pytest.mark.filterwarnings("ignore:The tensor attributes:UserWarning")  # torch.export on the pre-hooks
@pytest.mark.parametrize("api", ["torch.nn.utils.prune", "torch.ao.pruning"])
@pytest.mark.parametrize("capture", ["symbolic_trace", "torch.export"])
def test_a_torch_pruned_model_is_sparsified(capture, api):
    model, x = torch_pruned(api), torch.randn(8, 64)
    graph = fx.symbolic_trace(model) if capture == "symbolic_trace" else torch.export.export(model, (x,)).module()
    fast = passes.sparsify_graph(graph, example_inputs=(x,), options=ALWAYS)
    assert fast.sparsepass_report.rewritten == 2
    assert any("pruning" in note for note in fast.sparsepass_report.notes)
    assert_equivalent(model, fast, [x])  # the user's model still runs, as it was
    assert has_reparametrized_weights(model)


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


class MaskedLinear(nn.Module):
    """Research code's own pruning: a mask buffer multiplied into the weight in forward."""

    def __init__(self, masked_rows: int):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.randn(128, 64)), nn.Parameter(torch.randn(128))
        mask = torch.zeros(128, 64)
        mask[:masked_rows] = 1  # whole 32-row blocks kept
        self.register_buffer("mask", mask)

    def forward(self, x):
        return torch.nn.functional.linear(x, self.weight * self.mask, self.bias)


def test_a_models_own_masked_weight_is_folded_and_sparsified():
    torch.manual_seed(0)
    model, x = nn.Sequential(MaskedLinear(32), nn.ReLU()).eval(), torch.randn(16, 64)
    fast = passes.sparsify_graph(fx.symbolic_trace(model), example_inputs=(x,), options=ALWAYS)
    [layer] = fast.sparsepass_report
    assert layer.name == "0.weight_masked" and layer.kernel.startswith("bsr") and layer.kernel.endswith("+relu")
    assert layer.density == 0.25
    assert_equivalent(model, fast, [x])


def test_a_product_of_constants_that_is_not_a_weight_is_left_alone():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.randn(8))  # a parameter: traced as get_attr, not computed
            self.register_buffer("mask", torch.randn(8))

        def forward(self, x):
            return x * (self.scale * self.mask)

    fast = passes.sparsify_graph(fx.symbolic_trace(Scaled().eval()), example_inputs=(torch.randn(2, 8),))
    assert any(n.op == "call_function" and n.target.__name__ == "mul" and
               all(a.op == "get_attr" for a in n.args) for n in fast.graph.nodes)
    assert not any("folded" in note for note in fast.sparsepass_report.notes)
