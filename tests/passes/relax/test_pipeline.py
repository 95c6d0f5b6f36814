"""pipeline(target): a whole pruned BERT encoder built through Relax equals PyTorch and deploys."""

import pytest
import torch
import tvm
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsepass import frontends, prune
from sparsepass.passes import relax as sp
from sparsepass.testing import gamma, output_tolerance
from sparsepass.testing.relax import call_tir_targets, run_vm, sparsepass_kernels

transformers = pytest.importorskip("transformers")


def bert_encoder(layers=2, hidden=256):
    config = transformers.BertConfig(hidden_size=hidden, intermediate_size=4 * hidden,
                                     num_attention_heads=4, num_hidden_layers=layers)
    model = transformers.models.bert.modeling_bert.BertEncoder(config).eval()
    return model, config


class EncoderOnly(torch.nn.Module):
    """BertEncoder returning a plain tensor (what the Relax importer expects)."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, hidden):
        return self.encoder(hidden).last_hidden_state


@pytest.fixture(scope="module")
def pruned_bert_build(host):
    torch.manual_seed(0)
    encoder, config = bert_encoder()
    prune.prune_linears(encoder, (32, 1), 0.2)
    model = EncoderOnly(encoder).eval()
    x = torch.randn(1, 64, config.hidden_size)
    mod = frontends.to_relax(model, (x,))
    lowered = sp.pipeline()(mod)
    executable = tvm.compile(mod, target=host, relax_pipeline=sp.pipeline())
    return model, config, x, lowered, executable


@pytest.mark.slow
def test_pruned_bert_encoder_equals_pytorch(pruned_bert_build):
    model, config, x, lowered, executable = pruned_bert_build
    assert sp.report(lowered).rewritten == 12  # 6 linears per layer, 2 layers
    linears = [f"encoder.{name}" for name, m in model.encoder.named_modules() if isinstance(m, torch.nn.Linear)]
    assert [layer.name for layer in sp.report(lowered)] == linears  # PyTorch's names, in order
    kernels = set(sparsepass_kernels(lowered).values())
    assert {"bsr_linear.rows", "dense_matmul"} <= kernels
    expected = model(x)
    actual = run_vm(executable, x)
    torch.testing.assert_close(actual, expected, rtol=0,
                               atol=output_tolerance(expected, config.intermediate_size))


@pytest.mark.slow
def test_export_library_round_trip(pruned_bert_build, tmp_path):
    model, config, x, _, executable = pruned_bert_build
    path = str(tmp_path / "bert_sparse.so")
    executable.export_library(path)
    loaded = tvm.runtime.load_module(path)
    torch.testing.assert_close(run_vm(loaded, x), run_vm(executable, x), rtol=0, atol=0)


@pytest.mark.slow
def test_pruned_bert_built_for_symbolic_lengths_runs_any_batch_and_length(host):
    torch.manual_seed(1)
    encoder, config = bert_encoder(layers=1)
    prune.prune_linears(encoder, (32, 1), 0.2)
    model = EncoderOnly(encoder).eval()
    mod = frontends.to_relax(model, (torch.randn(2, 64, config.hidden_size),), dynamic_shapes="auto")
    lowered = sp.pipeline()(mod)
    kernels = sorted(layer.kernel for layer in sp.report(lowered))
    assert kernels == ["bsr 32x1 rows"] * 3 + ["bsr 32x1 rows +gelu"] + ["bsr 32x1 rows +residual"] * 2
    executable = tvm.compile(mod, target=host, relax_pipeline=sp.pipeline())
    for shape in [(2, 64), (1, 5), (3, 130)]:
        x = torch.randn(*shape, config.hidden_size)
        expected = model(x)
        torch.testing.assert_close(run_vm(executable, x), expected, rtol=0,
                                   atol=output_tolerance(expected, config.intermediate_size))


class BatchedMatmul(torch.nn.Module):
    def forward(self, a, b):
        return a @ b


@settings(max_examples=10)
@given(batch=st.lists(st.integers(1, 3), min_size=0, max_size=2), m=st.integers(1, 20),
       k=st.integers(1, 40), n=st.integers(1, 70), shared=st.booleans())
def test_dense_matmul_kernel_equals_pytorch(batch, m, k, n, shared, host):
    a = torch.randn(*batch, m, k)
    b = torch.randn(k, n) if shared else torch.randn(*batch, k, n)
    mod = sp.DenseMatmul()(frontends.to_relax(BatchedMatmul().eval(), (a, b)))
    assert len(call_tir_targets(mod)) == 1
    actual = run_vm(tvm.compile(mod, target=host), a, b)
    bound = 2 * gamma(k) * (a.abs() @ b.abs()) + torch.finfo(torch.float32).tiny
    assert ((actual - a @ b).abs() <= bound).all()


def test_pipeline_refuses_targets_it_cannot_build_for():
    with pytest.raises(NotImplementedError, match="llvm"):
        sp.pipeline({"kind": "vulkan"})
