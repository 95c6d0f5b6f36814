"""trace(): symbolic tracing first, torch.export as fallback, errors that name the culprit."""

import pytest
import torch
import torch.fx as fx
import torch.nn as nn

from sparsepass import SparsifyError, passes, prune
from sparsepass.frontends import trace
from sparsepass.testing import assert_equivalent


class Plain(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return torch.relu(self.fc(x))


class DataDependent(nn.Module):
    """Python control flow on a shape: defeats symbolic tracing, not export (which specialises)."""

    def forward(self, x):
        if x.shape[0] > 1:
            return x * 2
        return x


class Outer(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.inner = DataDependent()

    def forward(self, x):
        return self.inner(self.fc(x))


class Unexportable(DataDependent):
    def forward(self, x):
        if x.sum() > 0:  # control flow on a value: both symbolic tracing and export refuse
            return x * 2
        return x


class OuterUnexportable(Outer):
    def __init__(self):
        super().__init__()
        self.inner = Unexportable()


def test_symbolic_trace_keeps_module_calls():
    gm = trace(Plain().eval())
    assert isinstance(gm, fx.GraphModule)
    assert any(n.op == "call_module" and n.target == "fc" for n in gm.graph.nodes)


def test_falls_back_to_export_and_is_equal():
    model = Outer().eval()
    x = torch.ones(2, 8)
    gm = trace(model, (x,))
    assert any(n.target is torch.ops.aten.linear.default for n in gm.graph.nodes)
    torch.testing.assert_close(gm(x), model(x), rtol=0, atol=0)


def test_failure_without_examples_names_the_module_and_the_fixes():
    with pytest.raises(SparsifyError) as info:
        trace(Outer().eval())
    message = str(info.value)
    assert "inner (DataDependent)" in message
    assert "example_inputs" in message and "leaf_modules=['inner']" in message


def test_leaf_modules_fix_a_failing_trace():
    gm = trace(Outer().eval(), leaf_modules=["inner"])
    assert any(n.op == "call_module" and n.target == "inner" for n in gm.graph.nodes)


def test_both_failing_names_the_module_and_both_errors():
    with pytest.raises(SparsifyError) as info:
        trace(OuterUnexportable().eval(), (torch.ones(2, 8),))
    message = str(info.value)
    assert "inner (Unexportable)" in message
    assert "symbolic_trace" in message and "torch.export" in message


def test_rejects_non_modules():
    with pytest.raises(SparsifyError, match="nn.Module"):
        trace(lambda x: x)


class AttentionBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn, self.ff = nn.MultiheadAttention(64, 4, batch_first=True), nn.Linear(64, 64)

    def forward(self, x):
        return self.ff(self.attn(x, x, x, need_weights=False)[0])


def test_multihead_attention_is_exported_so_its_projections_are_seen():
    """symbolic_trace keeps nn.MultiheadAttention whole (its q/k/v and output projections hidden);
    with example inputs, trace exports such a model instead."""
    model = AttentionBlock().eval()
    prune.prune_linears(model, (32, 1), 0.2)
    x = torch.randn(2, 10, 64)
    gm = trace(model, (x,))
    assert not any(n.op == "call_module" and isinstance(gm.get_submodule(n.target), nn.MultiheadAttention)
                   for n in gm.graph.nodes)
    fast = passes.sparsify_graph(gm, example_inputs=(x,),
                                 options=passes.SparsifyOptions(cost=passes.CostModel(min_speedup=0.0)))
    assert {layer.name for layer in fast.sparsepass_report if layer.rewritten} == \
        {"attn.in_proj_weight", "attn.out_proj", "ff"}
    assert_equivalent(model, fast, [x, torch.randn(3, 7, 64)])  # dynamic, as the symbolic graph was
    symbolic = trace(model)  # no example inputs: nothing to export with
    assert any(n.op == "call_module" and n.target == "attn" for n in symbolic.graph.nodes)
