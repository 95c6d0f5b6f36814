"""A BERT encoder from transformers (config, random weights), pruned 32x1, equal after sparsify."""

import pytest
import torch

from sparsepass import frontends, passes, prune
from sparsepass.testing import output_tolerance

transformers = pytest.importorskip("transformers")


def small_bert(layers=2):
    config = transformers.BertConfig(hidden_size=256, intermediate_size=1024, num_attention_heads=4,
                                     num_hidden_layers=layers, vocab_size=500)
    return transformers.BertModel(config, add_pooling_layer=False).eval(), config


@pytest.mark.slow
def test_pruned_bert_encoder_equals_dense():
    torch.manual_seed(0)
    model, config = small_bert()
    masks = prune.prune_linears(model, (32, 1), 0.2)
    ids = torch.randint(0, config.vocab_size, (2, 32))
    gm = frontends.trace(model, (ids,))
    fast = passes.sparsify_graph(gm, example_inputs=(ids,))
    report = fast.sparsepass_report
    assert report.rewritten == len(masks) == 12
    assert all(layer.structure == "block 32x1" for layer in report if layer.rewritten)
    expected = model(ids).last_hidden_state
    actual = fast(ids)
    actual = actual.last_hidden_state if hasattr(actual, "last_hidden_state") else actual[0]
    tolerance = output_tolerance(expected, config.intermediate_size)
    torch.testing.assert_close(actual, expected, rtol=0, atol=tolerance)
