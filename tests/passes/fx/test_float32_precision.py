"""Float32 models follow PyTorch's float32 matmul precision: under "bf16" (what
``torch.set_float32_matmul_precision("medium")`` sets on CPUs) their linears may run on AMX with
bfloat16 products, as PyTorch's own do; otherwise they stay exact."""

import pytest
import torch
import torch.fx as fx
import torch.nn as nn

from sparsepass import passes, prune
from sparsepass.codegen.target import canonical_target, half_precision_features
from sparsepass.passes.precision import float32_in_bfloat16
from sparsepass.testing import assert_equivalent, float32_matmul_precision, gamma

needs_amx = pytest.mark.skipif("amx-bf16" not in half_precision_features(canonical_target()),
                               reason="this CPU has no AMX (amx_bf16): float32 layers stay on the exact kernels")


def pruned_feed_forward():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 1024), nn.GELU(), nn.Linear(1024, 256)).eval()
    prune.prune_linears(model, (32, 32), 0.1)
    return model


def kernels(graph) -> list[str]:
    return [layer.kernel for layer in graph.sparsepass_report]


@needs_amx
def test_float32_layers_follow_pytorchs_bf16_precision_onto_amx():
    model, x = pruned_feed_forward(), torch.randn(64, 256)
    with float32_matmul_precision("bf16"):
        fast = passes.sparsify_graph(fx.symbolic_trace(model))
        assert kernels(fast) == ["bsr 32x32 amx +gelu", "bsr 32x32 amx"]
        assert all("bfloat16 products" in layer.reason for layer in fast.sparsepass_report)
        assert_equivalent(model, fast, [x])  # against PyTorch's own bfloat16-product linears
        y = fast(x)
    # The first layer's products, exactly as PyTorch rounds them under "bf16", summed in float32.
    up = model[0]
    h = x.bfloat16().double() @ up.weight.bfloat16().double().T + up.bias.double()
    first = passes.sparsify_graph(fx.symbolic_trace(nn.Sequential(up).eval()), options=passes.SparsifyOptions(
        float32_precision="bf16"))
    magnitude = x.bfloat16().double().abs() @ up.weight.bfloat16().double().abs().T + up.bias.double().abs()
    assert ((first(x).double() - h).abs() <= gamma(258) * magnitude).all()
    assert y.dtype == torch.float32


@needs_amx
def test_explicit_precision_overrides_pytorchs():
    model, before = pruned_feed_forward(), torch.backends.mkldnn.matmul.fp32_precision
    with float32_matmul_precision("bf16"):
        exact = passes.sparsify_graph(fx.symbolic_trace(model), options=passes.SparsifyOptions(float32_precision="ieee"))
    assert kernels(exact) == ["bsr 32x32 rows +gelu", "bsr 32x32 rows"]
    with float32_matmul_precision("none"):
        fast = passes.sparsify_graph(fx.symbolic_trace(model), options=passes.SparsifyOptions(float32_precision="bf16"))
        default = passes.sparsify_graph(fx.symbolic_trace(model))
    assert kernels(fast) == ["bsr 32x32 amx +gelu", "bsr 32x32 amx"]
    assert kernels(default) == ["bsr 32x32 rows +gelu", "bsr 32x32 rows"]
    assert torch.backends.mkldnn.matmul.fp32_precision == before  # the contexts restored it
    assert_equivalent(model, default, [torch.randn(8, 256)])


def test_unknown_precision_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="float32_precision 'medium'.*bf16"):
        passes.SparsifyOptions(float32_precision="medium")


@needs_amx
def test_measured_float32_kernel_is_timed_against_pytorch_under_the_same_precision():
    model, x = pruned_feed_forward(), torch.randn(64, 256)
    options = passes.SparsifyOptions(float32_precision="bf16", measure=True)
    with float32_matmul_precision("none"):
        fast = passes.sparsify_graph(fx.symbolic_trace(model), example_inputs=(x,), options=options)
        assert torch.backends.mkldnn.matmul.fp32_precision == "none"  # restored after the timing
    assert all("measured" in layer.reason for layer in fast.sparsepass_report)


def test_precision_is_read_from_pytorchs_setting_unless_given():
    """PyTorch's legacy switch ("medium") and its CPU matmul flag both count; an explicit option wins."""
    try:
        torch.set_float32_matmul_precision("medium")
        assert float32_in_bfloat16(None) and not float32_in_bfloat16("ieee")
        torch.set_float32_matmul_precision("highest")
        assert not float32_in_bfloat16(None) and float32_in_bfloat16("bf16")
    finally:
        torch.set_float32_matmul_precision("highest")
    with float32_matmul_precision("bf16"):
        assert float32_in_bfloat16(None)
    with pytest.raises(ValueError, match="expected one of"):
        float32_in_bfloat16("fp8")
