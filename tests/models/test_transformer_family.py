"""More transformer families from transformers (configs, random weights): every pruned linear is
rewritten, with the epilogues each family allows, and the outputs stay equal."""

import pytest
import torch

from sparsepass import frontends, passes, prune
from sparsepass.testing import assert_equivalent

transformers = pytest.importorskip("transformers")


def llama():
    config = transformers.LlamaConfig(num_hidden_layers=2, hidden_size=256, intermediate_size=768,
                                      num_attention_heads=4, num_key_value_heads=2, vocab_size=500,
                                      use_cache=False)
    return transformers.LlamaModel(config)


def t5_encoder():
    config = transformers.T5Config(num_layers=2, d_model=256, d_ff=1024, num_heads=4, d_kv=64, vocab_size=500,
                                   feed_forward_proj="gated-gelu", use_cache=False)
    return transformers.T5EncoderModel(config)


#: family -> (factory, {layer-name suffix: the epilogue its kernel must carry})
FAMILIES = {
    "llama": (llama, {"mlp.gate_proj": "+silu", "mlp.down_proj": "+residual", "self_attn.o_proj": "+residual"}),
    # T5's gated GELU is written out as 0.5x(1 + tanh(...)): recognised, then fused.
    "t5 encoder": (t5_encoder, {"DenseReluDense.wi_0": "+gelu_tanh", "DenseReluDense.wo": "+residual"}),
}


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_pruned_family_is_rewritten_and_equal(family):
    torch.manual_seed(0)
    factory, epilogues = FAMILIES[family]
    model = factory().eval()
    masks = prune.prune_linears(model, (32, 1), 0.1)
    ids = torch.randint(0, 500, (1, 48))
    fast = passes.sparsify_graph(frontends.trace(model, (ids,)), example_inputs=(ids,))
    report = fast.sparsepass_report
    assert report.rewritten == len(masks) > 0
    for layer in report:
        for suffix, epilogue in epilogues.items():
            if layer.name.endswith(suffix):
                assert epilogue in layer.kernel, (layer.name, layer.kernel)
    assert_equivalent(model, fast, [(ids,)])
