"""sparsify_graph on linear layers: equal outputs for every call form, shape and structure."""

import copy

import pytest
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from sparsepass import SparsifyError, passes, prune
from sparsepass.passes.plan import CostModel
from sparsepass.testing import assert_linear_close, linear_error_bound
from sparsepass.testing import strategies as sps

#: Rewrite every layer that has zeros, so the kernels run even where dense would win.
ALWAYS = passes.SparsifyOptions(cost=CostModel(min_speedup=0.0))


class ModuleCall(nn.Module):
    def __init__(self, linear):
        super().__init__()
        self.fc = linear

    def forward(self, x):
        return self.fc(x)


class FunctionalCall(nn.Module):
    def __init__(self, linear):
        super().__init__()
        self.weight = nn.Parameter(linear.weight.detach().clone())
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone())

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class MatmulTransposed(FunctionalCall):
    def forward(self, x):
        y = x @ self.weight.t()
        return y if self.bias is None else y + self.bias


class MatmulStored(nn.Module):
    """``torch.matmul(x, W)`` with W stored as [in, out]."""

    def __init__(self, linear):
        super().__init__()
        self.w_in_out = nn.Parameter(linear.weight.detach().t().contiguous())

    def forward(self, x):
        return torch.matmul(x, self.w_in_out)


class AddmmStored(FunctionalCall):
    """``torch.addmm(b, x, W)`` with W stored as [in, out], as Hugging Face's Conv1D (GPT-2) does."""

    def __init__(self, linear):
        super().__init__(linear)
        self.w_in_out = nn.Parameter(linear.weight.detach().t().contiguous())
        self.bias = nn.Parameter(torch.zeros(linear.out_features) if self.bias is None else self.bias)

    def forward(self, x):
        y = torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.w_in_out)
        return y.reshape(x.shape[:-1] + (self.w_in_out.shape[1],))


FORMS = [ModuleCall, FunctionalCall, MatmulTransposed, MatmulStored, AddmmStored]


@given(sps.pruned_linears(max_side=72), st.sampled_from(FORMS), sps.leading_dims())
def test_sparsified_equals_dense(linear, form, lead):
    model = form(linear).eval()
    gm = fx.symbolic_trace(model)
    x = torch.randn(*lead, linear.in_features)
    fast = passes.sparsify_graph(gm, options=ALWAYS)
    expected = model(x)
    bias = None if form is MatmulStored else model.bias if form is AddmmStored else linear.bias
    assert_linear_close(fast(x), expected, x, linear.weight, bias)
    has_zeros = bool((linear.weight == 0).any())
    assert fast.sparsepass_report.rewritten == int(has_zeros)


class AddmmScaled(AddmmStored):
    def forward(self, x):
        return torch.addmm(self.bias, x, self.w_in_out, beta=0.5)


def test_scaled_addmm_stays_dense_with_the_reason():
    linear = nn.Linear(64, 64)
    with torch.no_grad():
        linear.weight[:, ::2] = 0
    model = AddmmScaled(linear).eval()
    fast = passes.sparsify_graph(fx.symbolic_trace(model), options=ALWAYS)
    (layer,) = list(fast.sparsepass_report)
    assert not layer.rewritten and "beta=0.5" in layer.reason
    x = torch.randn(5, 64)
    torch.testing.assert_close(fast(x), model(x), rtol=0, atol=0)


class AddmmThenResidualRelu(AddmmStored):
    def forward(self, x):
        return torch.relu(super().forward(x) + x)


def test_flattened_addmm_takes_x_as_is_and_fuses_what_follows_the_view_back():
    linear = nn.Linear(64, 64)
    with torch.no_grad():
        linear.weight.mul_(torch.from_numpy(sps.block_mask(64, 64, (16, 1), 0.25, 3)))
    model = AddmmThenResidualRelu(linear).eval()
    x = torch.randn(2, 5, 64)
    fast = passes.sparsify_graph(fx.symbolic_trace(model), example_inputs=(x,), options=ALWAYS)
    (layer,) = list(fast.sparsepass_report)
    assert layer.kernel.endswith("+residual +relu")
    calls = [n for n in fast.graph.nodes if n.op in ("call_function", "call_method")]
    assert [n.target for n in calls] == [torch.ops.sparsepass.bsr_linear.default]  # no views left
    expected = model(x)
    pre = F.linear(x, linear.weight, model.bias) + x
    bound = linear_error_bound(x, linear.weight) + torch.finfo(torch.float32).eps * (pre.abs() + x.abs() + 1)
    assert ((fast(x) - expected).abs() <= bound).all()


def test_shared_weight_is_packed_once():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(64, 32) * torch.from_numpy(sps.block_mask(64, 32, (16, 1), 0.2, 1)))

        def forward(self, x):
            return F.linear(x, self.w) + F.linear(x * 2, self.w)

    model = Shared().eval()
    fast = passes.sparsify_graph(fx.symbolic_trace(model), options=ALWAYS)
    x = torch.randn(5, 32)
    # Sum of two linears: each within its bound, plus one rounding of the add.
    bound = linear_error_bound(x, model.w) + linear_error_bound(2 * x, model.w)
    bound += torch.finfo(torch.float32).eps * model(x).abs()
    assert ((fast(x) - model(x)).abs() <= bound).all()
    assert fast.sparsepass_report.rewritten == 2
    data_buffers = [n for n, _ in fast.named_buffers() if n.endswith("_data")]
    assert len(data_buffers) == 1
    assert not hasattr(fast, "w")  # the dense weight is gone


def block_sparse_model(n=256, k=128, density=0.1):
    linear = nn.Linear(k, n)
    with torch.no_grad():
        linear.weight.mul_(torch.from_numpy(sps.block_mask(n, k, (32, 1), density, 0)))
    return ModuleCall(linear).eval()


def test_input_graph_is_not_mutated_and_report_is_attached():
    gm = fx.symbolic_trace(block_sparse_model())
    before = gm.code
    fast = passes.sparsify_graph(gm)
    assert gm.code == before and hasattr(gm, "fc")
    assert fast.sparsepass_report.rewritten == 1
    layer = fast.sparsepass_report["fc"]
    assert layer.kernel == "bsr 32x1 rows" and layer.structure == "block 32x1"
    assert "fc" in str(fast.sparsepass_report)
    node = next(n for n in fast.graph.nodes if n.target is torch.ops.sparsepass.bsr_linear.default)
    assert node.meta["sparsepass"] is layer


def test_running_twice_equals_once():
    gm = fx.symbolic_trace(block_sparse_model())
    once = passes.sparsify_graph(gm)
    twice = passes.sparsify_graph(once)
    assert twice.code == once.code and twice.sparsepass_report.rewritten == 0
    x = torch.randn(3, 128)
    torch.testing.assert_close(twice(x), once(x), rtol=0, atol=0)


def test_dense_model_is_unchanged():
    model = ModuleCall(nn.Linear(64, 64)).eval()
    gm = fx.symbolic_trace(model)
    fast = passes.sparsify_graph(gm)
    assert fast.sparsepass_report.rewritten == 0
    assert fast.sparsepass_report["fc"].reason == "weight has no zeros"
    x = torch.randn(4, 64)
    torch.testing.assert_close(fast(x), model(x), rtol=0, atol=0)


# --- bad input: a clear error naming the layer, or dense with the reason ---------------------


def test_training_mode_is_refused_naming_the_module():
    model = block_sparse_model()
    model.train()
    with pytest.raises(SparsifyError, match="training mode"):
        passes.sparsify_graph(fx.symbolic_trace(model))


def test_wrong_input_width_names_the_layer():
    fast = passes.sparsify_graph(fx.symbolic_trace(block_sparse_model()))
    with pytest.raises(SparsifyError, match=r"layer fc: input of shape \(2, 100\)"):
        fast(torch.randn(2, 100))


def test_non_float32_input_names_the_layer():
    fast = passes.sparsify_graph(fx.symbolic_trace(block_sparse_model()))
    with pytest.raises(SparsifyError, match="layer fc: input dtype is torch.float64"):
        fast(torch.randn(2, 128, dtype=torch.float64))


def test_non_constant_weight_stays_dense_with_reason():
    class Dynamic(nn.Module):
        def forward(self, x, w):
            return F.linear(x, w)

    fast = passes.sparsify_graph(fx.symbolic_trace(Dynamic().eval()))
    [layer] = fast.sparsepass_report
    assert layer.kernel == "dense" and "not a constant" in layer.reason


@pytest.mark.parametrize("with_examples", [False, True], ids=["no examples", "compacted"])
def test_float64_weight_stays_dense_with_reason(with_examples):
    model = block_sparse_model().double()
    examples = (torch.randn(2, 128, dtype=torch.float64),) if with_examples else None
    fast = passes.sparsify_graph(fx.symbolic_trace(model), example_inputs=examples)
    assert fast.sparsepass_report["fc"].kernel == "dense"
    assert "float64" in fast.sparsepass_report["fc"].reason


@pytest.mark.parametrize("with_examples", [False, True], ids=["no examples", "compacted"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_weight_gets_a_kernel(dtype, with_examples):
    """Also through channel compaction, which reads the weights' zeros (numpy has no bfloat16)."""
    model = block_sparse_model().to(dtype)
    examples = (torch.randn(2, 128, dtype=dtype),) if with_examples else None
    fast = passes.sparsify_graph(fx.symbolic_trace(model), example_inputs=examples, options=ALWAYS)
    assert fast.sparsepass_report["fc"].kernel == "bsr 32x1 rows"
    x = torch.randn(3, 128, dtype=dtype)
    assert fast(x).dtype == dtype


def test_nan_weight_stays_dense_and_matches():
    model = block_sparse_model()
    with torch.no_grad():
        model.fc.weight[0, 0] = float("nan")
    fast = passes.sparsify_graph(fx.symbolic_trace(model))
    assert fast.sparsepass_report["fc"].kernel == "dense"
    x = torch.randn(2, 128)
    torch.testing.assert_close(fast(x), model(x), equal_nan=True, rtol=0, atol=0)


def test_not_a_graph_module_is_refused():
    with pytest.raises(SparsifyError, match="GraphModule"):
        passes.sparsify_graph(block_sparse_model())


# --- the result keeps working under PyTorch's other tools -------------------------------------


def test_result_runs_under_export_and_compile():
    model = block_sparse_model()
    fast = passes.sparsify_graph(fx.symbolic_trace(model))
    x = torch.randn(4, 128)
    expected = fast(x)
    exported = torch.export.export(fast, (x,)).module()
    torch.testing.assert_close(exported(x), expected, rtol=0, atol=0)
    compiled = torch.compile(fast, backend="eager")
    torch.testing.assert_close(compiled(x), expected, rtol=0, atol=0)


def test_result_survives_deepcopy():
    fast = passes.sparsify_graph(fx.symbolic_trace(block_sparse_model()))
    x = torch.randn(4, 128)
    torch.testing.assert_close(copy.deepcopy(fast)(x), fast(x), rtol=0, atol=0)


class ParallelBranches(nn.Module):
    """Phi's block: the attention and MLP branches summed, the second computed after the first."""

    def __init__(self):
        super().__init__()
        mask = torch.from_numpy(sps.block_mask(64, 64, (16, 1), 0.2, 3))
        self.a, self.b = nn.Linear(64, 64), nn.Linear(64, 64)
        with torch.no_grad():
            self.a.weight.mul_(mask)
            self.b.weight.mul_(mask.flip(0))

    def forward(self, x):
        return self.a(x) + self.b(torch.relu(x))


def test_a_residual_computed_after_the_linear_is_fused_in_graph_order():
    model, x = ParallelBranches().eval(), torch.randn(6, 64)
    fast = passes.sparsify_graph(fx.symbolic_trace(model), example_inputs=(x,), options=ALWAYS)
    fast.graph.lint()
    assert sorted(layer.kernel for layer in fast.sparsepass_report) == ["bsr 16x1 rows", "bsr 16x1 rows +residual"]
    bound = linear_error_bound(x, model.a.weight) + linear_error_bound(torch.relu(x), model.b.weight)
    assert ((fast(x) - model(x)).abs() <= bound + torch.finfo(torch.float32).eps * model(x).abs()).all()


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:Please use quant_min:UserWarning",
                            "ignore:torch.quantize_per_tensor:UserWarning")
def test_quantized_layers_are_reported_not_skipped():
    """A dynamically quantized Linear and a statically quantized Conv2d stay as PyTorch runs
    them, each with a line in the report saying why and what to do instead."""
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64)).eval()
    prune.prune_linears(mlp, (32, 1), 0.1)
    quantized = torch.ao.quantization.quantize_dynamic(mlp, {nn.Linear}, dtype=torch.qint8).eval()
    x = torch.randn(4, 64)
    fast = passes.sparsify_graph(fx.symbolic_trace(quantized), example_inputs=(x,))
    assert [(layer.name, layer.kernel) for layer in fast.sparsepass_report] == [("0", "dense"), ("2", "dense")]
    assert all("qint8" in layer.reason and "sparsify the float model" in layer.reason
               for layer in fast.sparsepass_report)
    torch.testing.assert_close(fast(x), quantized(x), rtol=0, atol=0)

    class QuantizedConv(nn.Module):
        def __init__(self):
            super().__init__()
            self.quant, self.conv = torch.ao.quantization.QuantStub(), nn.Conv2d(4, 8, 3)
            self.dequant = torch.ao.quantization.DeQuantStub()

        def forward(self, x):
            return self.dequant(self.conv(self.quant(x)))

    float_conv = QuantizedConv().eval()
    float_conv.qconfig = torch.ao.quantization.get_default_qconfig("x86")
    prepared = torch.ao.quantization.prepare(float_conv)
    prepared(torch.randn(2, 4, 10, 10))
    converted = torch.ao.quantization.convert(prepared).eval()
    images = torch.randn(2, 4, 10, 10)
    fast = passes.sparsify_graph(fx.symbolic_trace(converted), example_inputs=(images,))
    [layer] = fast.sparsepass_report
    assert layer.name == "conv" and layer.kernel == "dense" and "quantized (qint8)" in layer.reason
    torch.testing.assert_close(fast(images), converted(images), rtol=0, atol=0)


class OtherLayers(nn.Module):
    """Layers with weights that no rule rewrites."""

    def __init__(self):
        super().__init__()
        self.c1, self.ct = nn.Conv1d(8, 16, 3), nn.ConvTranspose2d(4, 4, 3)
        self.lstm, self.attn = nn.LSTM(8, 8, batch_first=True), nn.MultiheadAttention(8, 2, batch_first=True)
        self.volume = nn.Parameter(torch.ones(1, 1, 1, 1, 1))

    def forward(self, x, image):
        seq = x.transpose(1, 2)
        return (self.c1(x).sum() + self.ct(image).sum() + self.lstm(seq)[0].sum()
                + self.attn(seq, seq, seq, need_weights=False)[0].sum() + F.conv3d(image[None], self.volume).sum())


def test_layers_no_rule_rewrites_are_reported_with_the_reason():
    model, inputs = OtherLayers().eval(), (torch.randn(2, 8, 20), torch.randn(1, 4, 8, 8))
    fast = passes.sparsify_graph(fx.symbolic_trace(model), example_inputs=inputs)
    ops = {layer.name: layer.op for layer in fast.sparsepass_report}
    assert ops == {"c1": "nn.Conv1d", "ct": "nn.ConvTranspose2d", "lstm": "nn.LSTM",
                   "attn": "nn.MultiheadAttention", "volume": "conv3d"}
    assert all(layer.kernel == "dense" for layer in fast.sparsepass_report)
    assert "frontends.trace" in fast.sparsepass_report["attn"].reason
    assert "2-D convs" in fast.sparsepass_report["c1"].reason
    torch.testing.assert_close(fast(*inputs), model(*inputs), rtol=0, atol=0)
