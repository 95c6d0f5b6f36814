"""Decoder models through the Relax pipeline: the bool mask code transformers emits builds and is right.

Two TVM 0.27 gaps stood in the way: the importer types a bool cumsum as bool (PyTorch counts in
int64; to_relax makes that explicit), and the vectoriser breaks on bool stores (our injective
schedule leaves bool blocks scalar)."""

import pytest
import torch
import tvm

from sparsepass import frontends, prune
from sparsepass.passes import relax as sp
from sparsepass.testing import output_tolerance
from sparsepass.testing.relax import run_vm

transformers = pytest.importorskip("transformers")


class Counts(torch.nn.Module):
    def forward(self, x):
        return (x != 1).cumsum(-1) * 10 + (x > 0).cumsum(0)


def test_cumsum_of_bool_counts_as_in_pytorch(host):
    x = torch.randint(-1, 3, (4, 40))
    mod = frontends.to_relax(Counts().eval(), (x,))
    executable = tvm.compile(mod, target=host, relax_pipeline=sp.pipeline())
    actual = run_vm(executable, x)
    assert actual.dtype == torch.int64 and torch.equal(actual, Counts()(x))


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_pruned_decoder_builds_and_equals_pytorch(family, host):
    torch.manual_seed(0)
    if family == "llama":
        config = transformers.LlamaConfig(num_hidden_layers=1, hidden_size=128, intermediate_size=384,
                                          num_attention_heads=4, num_key_value_heads=2, vocab_size=300,
                                          use_cache=False)
        model = transformers.LlamaModel(config)
    else:
        config = transformers.GPT2Config(n_layer=1, n_embd=128, n_head=4, vocab_size=300, bos_token_id=0,
                                         eos_token_id=0, use_cache=False)
        model = transformers.GPT2Model(config)
    model = model.eval()
    prune.prune_linears(model, (32, 1), 0.2)
    ids = torch.randint(0, 300, (1, 64))
    mod = frontends.to_relax(model, (ids,))
    executable = tvm.compile(mod, target=host, relax_pipeline=sp.pipeline())
    expected = model(ids).last_hidden_state
    actual = run_vm(executable, ids)
    torch.testing.assert_close(actual, expected, rtol=0, atol=output_tolerance(expected, 4 * 128))
    if family == "gpt2":  # its written-out GELU fuses into c_fc, which runs once (sparse)
        kernels = sorted(layer.kernel for layer in sp.report(tvm.transform.Sequential(sp.sparsepass_passes())(mod)))
        assert kernels == ["bsr 32x1 rows", "bsr 32x1 rows +gelu_tanh", "bsr 32x1 rows +residual",
                           "bsr 32x1 rows +residual"]
