"""SparsifyLinear as a Relax pass: rewrites, leaves alone what it should, composes."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import tvm
from hypothesis import given, settings
from hypothesis import strategies as st
from tvm import relax

from sparsepass import frontends
from sparsepass.codegen.epilogue import ERROR_BOUNDS
from sparsepass.passes import relax as sp
from sparsepass.passes.plan import CostModel
from sparsepass.testing import gamma
from sparsepass.testing import strategies as sps
from sparsepass.testing.relax import call_tir_targets, relax_ops, run_vm

ALWAYS = sp.SparsifyLinearOptions(cost=CostModel(min_speedup=0.0))


def pruned(n, k, block=(16, 1), density=0.2, seed=0, bias=True):
    linear = nn.Linear(k, n, bias=bias)
    with torch.no_grad():
        linear.weight.mul_(torch.from_numpy(sps.block_mask(n, k, block, density, seed)))
    return linear


def activate(y, act):
    if act == "gelu_tanh":
        return F.gelu(y, approximate="tanh")
    return {"none": y, "relu": F.relu(y), "gelu": F.gelu(y), "tanh": torch.tanh(y)}[act]


class Chain(nn.Module):
    def __init__(self, widths, blocks, densities, biases, acts, residual):
        super().__init__()
        self.layers = nn.ModuleList(
            pruned(n, k, b, d, i, bias) for i, (k, n, b, d, bias) in
            enumerate(zip(widths[:-1], widths[1:], blocks, densities, biases)))
        self.acts, self.residual = acts, residual

    def forward(self, x):
        for layer, act in zip(self.layers, self.acts):
            y = layer(x)
            y = activate(y, act)
            x = y + x if self.residual and y.shape == x.shape else y
        return x


LIPSCHITZ = {"none": 1.0, "relu": 1.0, "gelu": 1.13, "gelu_tanh": 1.13, "tanh": 1.0}


def chain_error_bound(model: Chain, x: torch.Tensor) -> torch.Tensor:
    """Propagate a rigorous bound on |sparse - dense| through the chain, layer by layer.

    A layer adds its own rounding (2 gamma_K |x||W|, plus the bias add and the
    epilogue's documented error) to the incoming error carried through |W|;
    activations stretch it by at most their Lipschitz constant.
    """
    error = torch.zeros_like(x, dtype=torch.float64)
    eps = torch.finfo(torch.float32).eps
    for layer, act in zip(model.layers, model.acts):
        w = layer.weight.abs().double()
        pre = layer(x)
        own = 2 * gamma(layer.in_features + 1) * (x.abs().double() @ w.T) + eps * pre.abs().double()
        a, b = ERROR_BOUNDS[act]
        new_error = LIPSCHITZ[act] * (error @ w.T + own) + a + b * pre.abs().double()
        y = activate(pre, act)
        if model.residual and y.shape == x.shape:
            new_error = new_error + error + eps * (y + x).abs().double()
            y = y + x
        error, x = new_error + eps * y.abs().double(), y
    return error


@st.composite
def chains(draw):
    depth = draw(st.integers(1, 3))
    widths = draw(st.lists(st.sampled_from([16, 24, 40, 64]), min_size=depth + 1, max_size=depth + 1))
    blocks = draw(st.lists(sps.block_shapes(), min_size=depth, max_size=depth))
    densities = draw(st.lists(st.floats(0.05, 0.9), min_size=depth, max_size=depth))
    biases = draw(st.lists(st.booleans(), min_size=depth, max_size=depth))
    acts = draw(st.lists(st.sampled_from(["none", "relu", "gelu", "gelu_tanh", "tanh"]), min_size=depth, max_size=depth))
    residual = draw(st.booleans())
    return Chain(widths, blocks, densities, biases, acts, residual).eval()


@settings(max_examples=12)
@given(model=chains(), lead=st.sampled_from([(1, 8), (3, 5), (2, 4, 3)]))
def test_random_chains_through_sequential_equal_pytorch(model, lead, host):
    x = torch.randn(*lead, model.layers[0].in_features)
    mod = frontends.to_relax(model, (x,))
    seq = tvm.transform.Sequential([
        relax.transform.DecomposeOpsForInference(),
        sp.SparsifyLinear(options=ALWAYS),
        relax.transform.FoldConstant(),
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
    ])
    mod = seq(mod)
    # A block as large as the weight at a high density can keep every weight: that layer has no zeros.
    assert sp.report(mod).rewritten == sum(bool((layer.weight == 0).any()) for layer in model.layers)
    actual = run_vm(tvm.compile(mod, target=host), x)
    assert ((actual - model(x)).abs() <= chain_error_bound(model, x)).all()


def linear_module(linear, rows=64):
    return frontends.to_relax(nn.Sequential(linear).eval(), (torch.randn(rows, linear.in_features),))


def test_before_after_single_layer():
    mod = linear_module(pruned(128, 64, (32, 1), 0.1))
    after = sp.SparsifyLinear(options=ALWAYS)(mod)
    [kernel] = call_tir_targets(after)
    func = after[kernel]
    assert func.attrs["sparsepass.kernel"] == "bsr_linear.rows"
    ops = relax_ops(after)
    assert "relax.matmul" not in ops and "relax.add" not in ops
    [layer] = sp.report(after)
    assert layer.kernel == "bsr 32x1 rows" and layer.structure == "block 32x1"


def test_dense_weight_is_left_alone():
    mod = linear_module(nn.Linear(64, 64))
    after = sp.SparsifyLinear()(mod)
    assert call_tir_targets(after) == []
    assert sp.report(after)[0].reason == "weight has no zeros"


def test_non_constant_weight_is_left_alone():
    class Dynamic(nn.Module):
        def forward(self, x, w):
            return x @ w

    mod = frontends.to_relax(Dynamic().eval(), (torch.randn(4, 8), torch.randn(8, 3)))
    after = sp.SparsifyLinear(options=ALWAYS)(mod)
    assert call_tir_targets(after) == [] and len(sp.report(after)) == 0


def test_running_twice_equals_once():
    mod = linear_module(pruned(96, 32))
    once = sp.SparsifyLinear(options=ALWAYS)(mod)
    twice = sp.SparsifyLinear(options=ALWAYS)(once)
    tvm.ir.assert_structural_equal(twice["main"], once["main"])


@pytest.mark.parametrize("context", [dict(opt_level=0), dict(disabled_pass=["sparsepass.SparsifyLinear"])])
def test_pass_context_can_turn_it_off(context):
    mod = linear_module(pruned(96, 32))
    with tvm.transform.PassContext(**context):
        after = tvm.transform.Sequential([sp.SparsifyLinear(options=ALWAYS)])(mod)
    assert call_tir_targets(after) == []


def test_activation_fused_through_reshape(host):
    model = nn.Sequential(pruned(128, 64, (32, 1), 0.2), nn.GELU()).eval()
    x = torch.randn(2, 32, 64)
    after = sp.SparsifyLinear(options=ALWAYS)(frontends.to_relax(model, (x,)))
    assert sp.report(after)[0].kernel == "bsr 32x1 rows +gelu"
    actual = run_vm(tvm.compile(after, target=host), x)
    pre = model[0](x)
    bound = 1.13 * 2 * gamma(65) * (x.abs() @ model[0].weight.abs().T) + 4.0e-7 * pre.abs() + 1e-7
    assert ((actual - model(x)).abs() <= bound).all()


def test_residual_and_relu_fuse_in_relax(host):
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = pruned(64, 64, (16, 1), 0.3, 1), pruned(64, 64, (16, 1), 0.3, 2)

        def forward(self, x):
            y = torch.relu(self.a(x) + x)
            return self.b(y) + y

    model = Residual().eval()
    x = torch.randn(2, 8, 64)
    after = sp.SparsifyLinear(options=ALWAYS)(frontends.to_relax(model, (x,)))
    kernels = sorted(layer.kernel for layer in sp.report(after))
    assert kernels == ["bsr 16x1 rows +residual", "bsr 16x1 rows +residual +relu"]
    assert "relax.add" not in relax_ops(after) and "relax.nn.relu" not in relax_ops(after)
    from sparsepass.testing import assert_equivalent

    assert_equivalent(model, tvm.compile(after, target=host), [x])


class ReusedOutput(nn.Module):
    """A linear whose output is used again after the add (as in GPT-2's written-out GELU)."""

    def __init__(self, form):
        super().__init__()
        self.linear, self.form = pruned(64, 64, (16, 1), 0.2), form

    def forward(self, x):
        y = self.linear(x)
        if self.form == "cubic":
            return y + 0.5 * y ** 3
        if self.form == "self":
            return torch.relu(y + y)
        return torch.relu(y + x), y


@pytest.mark.parametrize("form", ["cubic", "self", "two outputs"])
def test_output_used_elsewhere_is_not_fused_into_a_second_kernel(form, host):
    model = ReusedOutput(form).eval()
    x = torch.randn(8, 64)
    after = sp.SparsifyLinear(options=ALWAYS)(frontends.to_relax(model, (x,)))
    [layer] = sp.report(after)
    assert layer.kernel == "bsr 16x1 rows", "the epilogue would compute the layer twice"
    assert "relax.matmul" not in relax_ops(after) and len(call_tir_targets(after)) == 1
    from sparsepass.testing import assert_equivalent

    assert_equivalent(model, tvm.compile(after, target=host), [x])


class ResidualRelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = pruned(64, 64, (16, 1), 0.2)

    def forward(self, x):
        return torch.relu(self.linear(x) + x)


def test_residual_fuses_when_the_token_count_is_symbolic(host):
    model, x = ResidualRelu().eval(), torch.randn(2, 8, 64)
    after = sp.SparsifyLinear(options=ALWAYS)(frontends.to_relax(model, (x,), dynamic_shapes="auto"))
    [layer] = sp.report(after)
    assert layer.kernel == "bsr 16x1 rows +residual +relu"
    executable = tvm.compile(after, target=host)
    for shape in [(2, 8, 64), (3, 5, 64)]:
        other = torch.randn(*shape)
        torch.testing.assert_close(run_vm(executable, other), model(other), rtol=1e-5, atol=1e-5)


class ConstantAdd(nn.Module):
    """A linear without bias plus a constant that is not a bias (one value per token and feature)."""

    def __init__(self):
        super().__init__()
        self.linear = pruned(64, 64, (16, 1), 0.2, bias=False)
        self.register_buffer("constant", torch.randn(8, 64))

    def forward(self, x):
        return self.linear(x) + self.constant


def test_a_constant_add_that_is_no_bias_stays_outside_the_kernel(host):
    model, x = ConstantAdd().eval(), torch.randn(8, 64)
    after = sp.SparsifyLinear(options=ALWAYS)(frontends.to_relax(model, (x,)))
    [layer] = sp.report(after)
    assert layer.kernel == "bsr 16x1 rows" and "relax.matmul" not in relax_ops(after)
    torch.testing.assert_close(run_vm(tvm.compile(after, target=host), x), model(x), rtol=1e-5, atol=1e-5)


class PerTokenConstant(nn.Module):
    """A constant with one value per token (shaped [tokens, 1]), as many as the layer's outputs."""

    def __init__(self):
        super().__init__()
        self.linear = pruned(64, 64, (16, 1), 0.2, bias=False)
        self.register_buffer("constant", torch.arange(64, dtype=torch.float32).reshape(64, 1))

    def forward(self, x):
        return torch.relu(self.linear(x) + self.constant)


def test_a_constant_with_as_many_values_as_outputs_along_tokens_is_no_bias(host):
    model, x = PerTokenConstant().eval(), torch.randn(64, 64)
    after = sp.SparsifyLinear(options=ALWAYS)(frontends.to_relax(model, (x,)))
    [layer] = sp.report(after)
    assert layer.kernel == "bsr 16x1 rows"  # the add and the ReLU stay outside
    torch.testing.assert_close(run_vm(tvm.compile(after, target=host), x), model(x), rtol=1e-5, atol=1e-5)


class SharedLinear(nn.Module):
    """One pruned linear applied at three sites (ALBERT shares its layers' weights)."""

    def __init__(self):
        super().__init__()
        self.linear = pruned(64, 64, (16, 1), 0.2)

    def forward(self, x):
        y = torch.relu(self.linear(x) + x)
        return torch.relu(self.linear(y) + y) + self.linear(y * 2)


def test_a_linear_applied_at_several_sites_is_rewritten_at_each(host):
    model, x = SharedLinear().eval(), torch.randn(8, 64)
    after = sp.SparsifyLinear(options=ALWAYS)(frontends.to_relax(model, (x,)))
    assert "relax.matmul" not in relax_ops(after) and len(call_tir_targets(after)) == 3
    torch.testing.assert_close(run_vm(tvm.compile(after, target=host), x), model(x), rtol=1e-5, atol=1e-5)


class LinearAfterAttention(nn.Module):
    """DistilBERT's out_lin: on attention's transposed output, torch.export emits the linear as a
    batched matmul with the weight broadcast over the batch."""

    def __init__(self):
        super().__init__()
        self.linear = pruned(64, 64, (16, 1), 0.2)

    def forward(self, q):
        a = F.scaled_dot_product_attention(q, q, q)
        return self.linear(a.transpose(1, 2).reshape(q.shape[0], q.shape[2], 64))


def test_a_linear_with_its_weight_broadcast_is_rewritten(host):
    model, q = LinearAfterAttention().eval(), torch.randn(2, 4, 8, 16)
    mod = frontends.to_relax(model, (q,))
    assert "relax.broadcast_to" in relax_ops(mod)
    after = sp.SparsifyLinear(options=ALWAYS)(mod)
    [layer] = sp.report(after)
    assert layer.kernel == "bsr 16x1 rows" and "relax.matmul" in relax_ops(mod)
    assert relax_ops(after).count("relax.matmul") == relax_ops(mod).count("relax.matmul") - 1
    torch.testing.assert_close(run_vm(tvm.compile(after, target=host), q), model(q), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("activation, label", [
    (nn.ReLU6(), "bsr 32x1 rows +relu6"), (nn.Hardtanh(0, 6), "bsr 32x1 rows +relu6"),
    (nn.Hardtanh(-2.0, 2.0), "bsr 32x1 rows"),
])
def test_relu6_fuses_and_other_clips_stay(host, activation, label):
    model = nn.Sequential(pruned(128, 64, (32, 1), 0.2), activation).eval()
    x = torch.randn(2, 32, 64) * 4
    after = sp.SparsifyLinear(options=ALWAYS)(frontends.to_relax(model, (x,)))
    assert sp.report(after)[0].kernel == label
    assert ("relax.clip" in relax_ops(after)) == (label == "bsr 32x1 rows")
    actual = run_vm(tvm.compile(after, target=host), x)
    bound = 2 * gamma(65) * (x.abs() @ model[0].weight.abs().T) + 1e-7  # clips are 1-Lipschitz
    assert ((actual - model(x)).abs() <= bound).all()


def test_a_half_precision_layer_stays_dense_saying_why():
    """TVM's importer refuses half-precision torch models; a Relax module built otherwise keeps its
    float16 layers dense, and the report sends the user to the torch.fx path."""
    weight = (torch.randn(128, 64) * torch.from_numpy(sps.block_mask(128, 64, (32, 1), 0.1, 0))).half()
    builder = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([8, 64], "float16"))
    with builder.function("main", [x]):
        with builder.dataflow():
            transposed = builder.emit(relax.op.permute_dims(relax.const(weight.numpy())))
            out = builder.emit_output(relax.op.matmul(x, transposed))
        builder.emit_func_output(out)
    after = sp.SparsifyLinear(options=ALWAYS)(builder.get())
    [layer] = sp.report(after)
    assert call_tir_targets(after) == []
    assert layer.kernel == "dense" and "float16" in layer.reason and "torch.fx" in layer.reason
