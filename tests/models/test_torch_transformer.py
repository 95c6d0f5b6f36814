"""PyTorch's own nn.TransformerEncoder, pruned 32x1: all its linears (the packed q/k/v projection
of nn.MultiheadAttention included) rewritten, equal through both paths."""

import pytest
import torch
import torch.nn as nn
import tvm

from sparsepass import frontends, passes, prune
from sparsepass.codegen.target import canonical_target, tvm_target
from sparsepass.passes import relax as sp
from sparsepass.testing import output_tolerance
from sparsepass.testing.relax import run_vm


@pytest.mark.slow
@pytest.mark.parametrize("norm_first", [False, True])
def test_pruned_transformer_encoder_is_rewritten_and_equal(norm_first):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(128, 4, 512, dropout=0.0, batch_first=True, norm_first=norm_first)
    model = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    assert len(prune.prune_linears(model, (32, 1), 0.2)) == 8
    x = torch.randn(2, 24, 128)
    expected = model(x)
    tolerance = output_tolerance(expected, 512)

    fast = passes.sparsify_graph(frontends.trace(model, (x,)), example_inputs=(x,))
    assert fast.sparsepass_report.rewritten == 8
    torch.testing.assert_close(fast(x), expected, rtol=0, atol=tolerance)

    host = tvm_target(canonical_target())
    mod = frontends.to_relax(model, (x,))
    with host:
        assert sp.report(tvm.transform.Sequential(sp.sparsepass_passes())(mod)).rewritten == 8
    executable = tvm.compile(mod, target=host, relax_pipeline=sp.pipeline())
    torch.testing.assert_close(run_vm(executable, x), expected, rtol=0, atol=tolerance)
