"""Activations after a rewritten linear are folded into its kernel, and outputs stay equal."""

import math

import pytest
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from sparsepass import passes
from sparsepass.codegen.epilogue import ERROR_BOUNDS
from sparsepass.testing import linear_error_bound
from sparsepass.testing import strategies as sps

#: How much each activation can stretch a difference in its input (its largest slope).
LIPSCHITZ = {"none": 1.0, "relu": 1.0, "relu6": 1.0, "gelu": 1.13, "gelu_tanh": 1.13, "silu": 1.1, "tanh": 1.0}


def pruned_linear(n=96, k=64, bias=True):
    linear = nn.Linear(k, n, bias=bias)
    with torch.no_grad():
        linear.weight.mul_(torch.from_numpy(sps.block_mask(n, k, (16, 1), 0.2, 7)))
    return linear


def new_gelu(y):
    """Hugging Face's NewGELUActivation (GPT-2), op by op."""
    return 0.5 * y * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (y + 0.044715 * torch.pow(y, 3.0))))


class Functional(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fc, self.fn = pruned_linear(), fn

    def forward(self, x):
        return self.fn(self.fc(x))


class Module(nn.Module):
    def __init__(self, act):
        super().__init__()
        self.fc, self.act = pruned_linear(), act

    def forward(self, x):
        return self.act(self.fc(x))


CASES = [
    ("relu", lambda: Functional(F.relu)), ("relu", lambda: Functional(torch.relu)),
    ("relu", lambda: Module(nn.ReLU())), ("gelu", lambda: Functional(F.gelu)),
    ("gelu", lambda: Module(nn.GELU())), ("silu", lambda: Functional(F.silu)),
    ("silu", lambda: Module(nn.SiLU())), ("silu", lambda: Functional(lambda y: y * torch.sigmoid(y))),
    ("silu", lambda: Functional(lambda y: y.sigmoid() * y)), ("tanh", lambda: Functional(torch.tanh)),
    ("tanh", lambda: Module(nn.Tanh())),
    ("gelu_tanh", lambda: Functional(lambda y: F.gelu(y, approximate="tanh"))),
    ("gelu_tanh", lambda: Module(nn.GELU(approximate="tanh"))),
    ("gelu_tanh", lambda: Functional(new_gelu)),  # written out, as GPT-2 does: recognised first
    ("relu6", lambda: Functional(F.relu6)), ("relu6", lambda: Module(nn.ReLU6())),
    ("relu6", lambda: Module(nn.Hardtanh(0.0, 6.0))), ("relu6", lambda: Functional(lambda y: F.hardtanh(y, 0, 6))),
    ("relu6", lambda: Functional(lambda y: torch.clamp(y, 0, 6))),
    ("relu6", lambda: Functional(lambda y: y.clamp(min=0.0, max=6.0))),
    ("relu", lambda: Functional(lambda y: y.clamp(min=0))), ("relu", lambda: Functional(lambda y: y.clip(0))),
]


def assert_activation_close(name, actual, model, x):
    pre = model.fc(x)
    a, b = ERROR_BOUNDS[name]
    bound = (LIPSCHITZ[name] * linear_error_bound(x, model.fc.weight) + a + b * pre.abs()
             + torch.finfo(torch.float32).eps * (pre.abs() + 1))
    assert ((actual - model(x)).abs() <= bound).all()


@pytest.mark.parametrize("name,make", CASES)
def test_activation_is_fused_and_equal(name, make):
    model = make().eval()
    fast = passes.sparsify_graph(fx.symbolic_trace(model))
    assert fast.sparsepass_report["fc"].kernel.endswith(f"+{name}")
    assert sum(1 for n in fast.graph.nodes if n.op in ("call_function", "call_module", "call_method")) == 1
    x = torch.randn(7, 3, 64) * 3
    assert_activation_close(name, fast(x), model, x)


@pytest.mark.parametrize("name", ["gelu", "relu", "gelu_tanh", "relu6", "silu"])
def test_fused_at_aten_level(name):
    model = Functional({"gelu": F.gelu, "relu": F.relu, "gelu_tanh": new_gelu, "relu6": nn.ReLU6(),
                        "silu": lambda y: y * torch.sigmoid(y)}[name]).eval()
    x = torch.randn(5, 64)
    gm = torch.export.export(model, (x,)).module()
    fast = passes.sparsify_graph(gm)
    assert fast.sparsepass_report[0].kernel.endswith(f"+{name}")
    assert_activation_close(name, fast(x), model, x)


@pytest.mark.parametrize("clamp", [lambda y: torch.clamp(y, 0, 5), lambda y: y.clamp(-1, 6), nn.Hardtanh(),
                                   lambda y: y.clamp(max=6), lambda y: torch.clamp(y, y * 0, y * 0 + 6)])
def test_clamps_no_epilogue_has_stay_in_pytorch(clamp):
    model = Functional(clamp).eval()
    fast = passes.sparsify_graph(fx.symbolic_trace(model))
    assert fast.sparsepass_report["fc"].kernel == "bsr 16x1 rows"
    x = torch.randn(7, 64) * 5
    assert_activation_close("none", fast(x), model, x)


def test_activation_not_fused_when_linear_output_has_other_users():
    class TwoUsers(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = pruned_linear()

        def forward(self, x):
            y = self.fc(x)
            return F.relu(y) + y

    model = TwoUsers().eval()
    fast = passes.sparsify_graph(fx.symbolic_trace(model))
    assert fast.sparsepass_report["fc"].kernel == "bsr 16x1 rows"
    x = torch.randn(4, 64)
    expected = model(x)
    # relu(y) + y: each term within the linear bound, plus one rounding of the add.
    bound = 2 * linear_error_bound(x, model.fc.weight) + torch.finfo(torch.float32).eps * expected.abs()
    assert ((fast(x) - expected).abs() <= bound).all()


def test_fusion_can_be_turned_off():
    model = Functional(F.relu).eval()
    fast = passes.sparsify_graph(fx.symbolic_trace(model),
                                 options=passes.SparsifyOptions(fuse_activations=False))
    assert fast.sparsepass_report["fc"].kernel == "bsr 16x1 rows"


class ResidualBlock(nn.Module):
    """y = act(fc(x) + x): BERT's output projections, ResNet-style MLPs."""

    def __init__(self, act):
        super().__init__()
        self.fc, self.act = pruned_linear(64, 64), act

    def forward(self, x):
        return self.act(self.fc(x) + x)


@pytest.mark.parametrize("name,act", [("none", lambda y: y), ("relu", torch.relu), ("gelu", F.gelu)])
def test_residual_add_and_activation_fuse_into_one_call(name, act):
    model = ResidualBlock(act).eval()
    x = torch.randn(4, 32, 64)
    # Shapes (from example inputs) prove the residual is not a broadcast: only then is it fused.
    assert "+residual" not in passes.sparsify_graph(fx.symbolic_trace(model)).sparsepass_report["fc"].kernel
    fast = passes.sparsify_graph(fx.symbolic_trace(model), example_inputs=(x,))
    label = fast.sparsepass_report["fc"].kernel
    assert "+residual" in label and (name == "none" or label.endswith(f"+{name}"))
    calls = [n for n in fast.graph.nodes if n.op in ("call_function", "call_module", "call_method")]
    assert [n.target for n in calls] == [torch.ops.sparsepass.bsr_linear.default]
    pre = model.fc(x) + x
    a, b = ERROR_BOUNDS[name]
    bound = (LIPSCHITZ.get(name, 1.0) * (linear_error_bound(x, model.fc.weight)
                                          + torch.finfo(torch.float32).eps * pre.abs()) + a + b * pre.abs())
    assert ((fast(x) - model(x)).abs() <= bound + torch.finfo(torch.float32).tiny).all()


def test_residual_that_depends_on_the_layer_is_not_fused():
    class SelfResidual(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = pruned_linear(64, 64)

        def forward(self, x):
            y = self.fc(x)
            return y + y * 2

    fast = passes.sparsify_graph(fx.symbolic_trace(SelfResidual().eval()), example_inputs=(torch.randn(2, 64),))
    assert "+residual" not in fast.sparsepass_report["fc"].kernel
