"""A BERT encoder from transformers (config, random weights), pruned 32x1, equal after sparsify."""

import pytest
import torch

from sparsepass import SparsifyError, frontends, passes, prune
from sparsepass.testing import output_tolerance

transformers = pytest.importorskip("transformers")


def small_bert(layers=2):
    config = transformers.BertConfig(hidden_size=256, intermediate_size=1024, num_attention_heads=4,
                                     num_hidden_layers=layers, vocab_size=500)
    return transformers.BertModel(config, add_pooling_layer=False).eval(), config


def last_hidden_state(out):
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]


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
    tolerance = output_tolerance(expected, config.intermediate_size)
    torch.testing.assert_close(last_hidden_state(fast(ids)), expected, rtol=0, atol=tolerance)


@pytest.mark.slow
def test_sparsified_bert_traced_dynamic_runs_other_batch_sizes_and_lengths():
    torch.manual_seed(0)
    model, config = small_bert(layers=1)
    prune.prune_linears(model, (32, 1), 0.2)
    ids = torch.randint(0, config.vocab_size, (2, 32))
    fast = passes.sparsify_graph(frontends.trace(model, (ids,), dynamic_shapes="auto"), example_inputs=(ids,))
    assert fast.sparsepass_report.rewritten == 6
    for shape in [(2, 32), (1, 7), (3, 100)]:
        other = torch.randint(0, config.vocab_size, shape)
        expected = model(other).last_hidden_state
        tolerance = output_tolerance(expected, config.intermediate_size)
        torch.testing.assert_close(last_hidden_state(fast(other)), expected, rtol=0, atol=tolerance)


def test_static_capture_at_another_shape_fails_saying_how_to_capture_dynamically():
    model, config = small_bert(layers=1)
    ids = torch.randint(0, config.vocab_size, (2, 16))
    fast = passes.sparsify_graph(frontends.trace(model, (ids,)), example_inputs=(ids,))
    with pytest.raises(SparsifyError, match=r"traced with shapes \[\(2, 16\)\].*dynamic_shapes='auto'"):
        fast(torch.randint(0, config.vocab_size, (2, 17)))
