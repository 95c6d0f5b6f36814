"""More Hugging Face families (tiny configs, random weights), pruned 32x1, equal through both paths.

Each family once broke something the BERT and GPT-2 tests did not reach: ALBERT shares
one layer's weights across layers (the Relax passes gave every site the first one's
result), Phi adds its MLP branch to its attention projection (the fused kernel used that
residual before it was computed), DistilBERT's out_lin reaches Relax as a batched matmul
with the weight broadcast (it stayed dense), ConvNeXt has layer norms of one width with
different epsilons (duplicate kernel symbols), Mistral groups its key/value heads.
"""

import pytest
import torch
import tvm

from sparsepass import frontends, passes, prune
from sparsepass.codegen.target import canonical_target, tvm_target
from sparsepass.passes import relax as sp
from sparsepass.testing import output_tolerance
from sparsepass.testing.relax import run_vm

transformers = pytest.importorskip("transformers")

SIZES = dict(hidden_size=128, num_attention_heads=4, intermediate_size=512)


def ids():
    return (torch.randint(0, 300, (2, 24)),)


FAMILIES = {
    "albert": lambda: (transformers.AlbertModel(transformers.AlbertConfig(
        vocab_size=300, embedding_size=64, num_hidden_layers=2, **SIZES), add_pooling_layer=False), ids(), 7),
    "phi": lambda: (transformers.PhiModel(transformers.PhiConfig(
        vocab_size=300, num_hidden_layers=1, use_cache=False, **SIZES)), ids(), 6),
    "distilbert": lambda: (transformers.DistilBertModel(transformers.DistilBertConfig(
        vocab_size=300, dim=128, n_heads=4, hidden_dim=512, n_layers=1)), ids(), 6),
    "convnext": lambda: (transformers.ConvNextModel(transformers.ConvNextConfig(
        hidden_sizes=[32, 64], depths=[1, 1], num_stages=2, layer_scale_init_value=1.0)),
        (torch.randn(2, 3, 32, 32),), 4),
    "mistral": lambda: (transformers.MistralModel(transformers.MistralConfig(
        vocab_size=300, num_hidden_layers=1, num_key_value_heads=2, use_cache=False, **SIZES)), ids(), 7),
}


def last_hidden_state(out):
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_equals_dense_through_fx_and_relax(family):
    host = tvm_target(canonical_target())
    torch.manual_seed(0)
    model, inputs, linears = FAMILIES[family]()
    model = model.eval()
    assert len(prune.prune_linears(model, (32, 1), 0.2)) == linears
    expected = last_hidden_state(model(*inputs))
    tolerance = output_tolerance(expected, 512)

    fast = passes.sparsify_graph(frontends.trace(model, inputs), example_inputs=inputs)
    assert fast.sparsepass_report.rewritten >= linears  # ALBERT: its shared layer counts once per call
    torch.testing.assert_close(last_hidden_state(fast(*inputs)), expected, rtol=0, atol=tolerance)

    mod = frontends.to_relax(model, inputs)
    with host:
        assert sp.report(tvm.transform.Sequential(sp.sparsepass_passes())(mod)).rewritten == \
            fast.sparsepass_report.rewritten
    executable = tvm.compile(mod, target=host, relax_pipeline=sp.pipeline())
    torch.testing.assert_close(run_vm(executable, *inputs), expected, rtol=0, atol=tolerance)
