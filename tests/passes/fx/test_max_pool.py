"""Max pools through sparsify_graph: run on the pool kernel (with the ReLU before them) where they
can, stay in PyTorch with the reason where they cannot, and equal PyTorch either way."""

import pytest
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from sparsepass import SparsifyError, passes
from sparsepass.testing import assert_equivalent


class Stem(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.relu, self.pool = nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)

    def forward(self, x):
        return self.pool(self.relu(self.conv(x)))


class Functional(nn.Module):
    def __init__(self, **pool):
        super().__init__()
        self.pool = pool

    def forward(self, x):
        y = F.max_pool2d(x, 2, **self.pool)
        return y[0] if self.pool.get("return_indices") else y + 1


def _ops(gm: fx.GraphModule) -> list:
    return [n.target for n in gm.graph.nodes if n.op == "call_function"]


def test_relu_and_pool_become_one_kernel():
    model, x = Stem().eval(), torch.randn(2, 3, 21, 18)
    fast = passes.sparsify_graph(fx.symbolic_trace(model), example_inputs=(x,))
    [op] = fast.sparsepass_report.other_ops
    assert (op.name, op.kernel) == ("pool", "max pool 3x3/2 +relu")
    assert torch.ops.sparsepass.max_pool2d.default in _ops(fast)
    assert not any(n.op == "call_module" and n.target in ("relu", "pool") for n in fast.graph.nodes)
    assert "max pool 3x3/2 +relu" in str(fast.sparsepass_report)
    assert_equivalent(model, fast, [x])


class WithIndices(nn.Module):
    def __init__(self):
        super().__init__()
        self.pool = nn.MaxPool2d(2, return_indices=True)

    def forward(self, x):
        values, indices = self.pool(x)
        return values + indices


@pytest.mark.parametrize("model, why, dtype", [
    (WithIndices(), "returns indices", torch.float32),
    (Functional(dilation=2), "dilation", torch.float32),
    (Functional(), "torch.float64", torch.float64),
])
def test_pools_the_kernel_does_not_cover_stay_in_pytorch_with_the_reason(model, why, dtype):
    model, x = model.eval(), torch.randn(1, 4, 12, 12, dtype=dtype)
    fast = passes.sparsify_graph(fx.symbolic_trace(model), example_inputs=(x,))
    [op] = fast.sparsepass_report.other_ops
    assert op.kernel == "dense" and why in op.reason
    assert torch.ops.sparsepass.max_pool2d.default not in _ops(fast)
    assert_equivalent(model, fast, [x])


class SharedRelu(nn.Module):
    def forward(self, x):
        y = torch.relu(x)
        return F.max_pool2d(y, 2), y


def test_a_relu_with_other_users_is_not_fused():
    model, x = SharedRelu().eval(), torch.randn(1, 2, 8, 8)
    fast = passes.sparsify_graph(fx.symbolic_trace(model), example_inputs=(x,))
    assert fast.sparsepass_report.other_ops[0].kernel == "max pool 2x2/2"
    assert_equivalent(model, fast, [x])


def test_functional_pool_with_ceil_mode_and_no_relu():
    model, x = Functional(stride=2, ceil_mode=True).eval(), torch.randn(3, 5, 9, 11)
    fast = passes.sparsify_graph(fx.symbolic_trace(model), example_inputs=(x,))
    assert fast.sparsepass_report.other_ops[0].kernel == "max pool 2x2/2"
    assert_equivalent(model, fast, [x])


def test_exported_graph_pool():
    model, x = Stem().eval(), torch.randn(1, 3, 16, 16)
    exported = torch.export.export(model, (x,)).module()
    fast = passes.sparsify_graph(exported)
    assert fast.sparsepass_report.other_ops[0].kernel == "max pool 3x3/2 +relu"
    assert_equivalent(model, fast, [x])


def test_without_sizes_or_when_disabled_the_pool_stays():
    model, x = Stem().eval(), torch.randn(1, 3, 16, 16)
    unknown = passes.sparsify_graph(fx.symbolic_trace(model))
    assert "input size unknown" in unknown.sparsepass_report.other_ops[0].reason
    off = passes.sparsify_graph(fx.symbolic_trace(model), example_inputs=(x,),
                                options=passes.SparsifyOptions(pooling=False))
    assert off.sparsepass_report.other_ops == ()
    assert torch.ops.sparsepass.max_pool2d.default not in _ops(off)


def test_an_input_of_another_size_is_an_error_naming_the_pool():
    model = Stem().eval()
    fast = passes.sparsify_graph(fx.symbolic_trace(model), example_inputs=(torch.randn(1, 3, 16, 16),))
    with pytest.raises(SparsifyError, match="pool"):
        fast(torch.randn(1, 3, 20, 16))
