"""GPT-2 from transformers (config, random weights): its Conv1D projections pruned and rewritten, equal."""

import pytest
import torch

from sparsepass import SparsifyError, frontends, passes, prune
from sparsepass.testing import output_tolerance

transformers = pytest.importorskip("transformers")


def small_gpt2(use_cache=False, layers=2):
    config = transformers.GPT2Config(n_layer=layers, n_embd=256, n_head=4, vocab_size=500,
                                     bos_token_id=0, eos_token_id=0, use_cache=use_cache)
    return transformers.GPT2Model(config).eval(), config


@pytest.mark.slow
def test_pruned_gpt2_equals_dense():
    torch.manual_seed(0)
    model, config = small_gpt2()
    masks = prune.prune_linears(model, (32, 1), 0.2)
    assert len(masks) == 4 * config.n_layer  # c_attn, attn.c_proj, c_fc, mlp.c_proj: all Conv1D
    ids = torch.randint(0, config.vocab_size, (2, 32))
    fast = passes.sparsify_graph(frontends.trace(model, (ids,)), example_inputs=(ids,))
    report = fast.sparsepass_report
    assert report.rewritten == len(masks)
    assert {layer.name for layer in report if layer.rewritten} == set(masks)
    # Conv1D flattens x for its addmm; the kernel takes x as it is, so what follows the view back fuses:
    # the written-out tanh-GELU after c_fc, the residual adds after both c_proj.
    kernels = {layer.name: layer.kernel for layer in report}
    assert all(kernels[f"h.{i}.mlp.c_fc"].endswith("+gelu_tanh") for i in range(config.n_layer))
    assert all("+residual" in kernels[f"h.{i}.{part}.c_proj"] for i in range(config.n_layer)
               for part in ("attn", "mlp"))
    expected = model(ids).last_hidden_state
    actual = fast(ids)
    actual = actual.last_hidden_state if hasattr(actual, "last_hidden_state") else actual[0]
    torch.testing.assert_close(actual, expected, rtol=0, atol=output_tolerance(expected, 4 * config.n_embd))


def test_a_returned_kv_cache_names_the_fix():
    model, config = small_gpt2(use_cache=True, layers=1)
    with pytest.raises(SparsifyError, match="use_cache = False"):
        frontends.trace(model, (torch.randint(0, config.vocab_size, (1, 8)),))
