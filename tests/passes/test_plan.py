"""The planner picks a sparse kernel only where it should win, and always says why."""

import numpy as np
import pytest
import torch

from sparsepass.codegen.target import canonical_target
from sparsepass.passes.analysis import detect
from sparsepass.passes.plan import choose
from sparsepass.testing import strategies as sps

HOST = canonical_target()


def pruned(n, k, block, density, dtype=np.float32):
    mask = sps.block_mask(n, k, block, density, 0)
    return (np.random.default_rng(0).standard_normal((n, k)) * mask).astype(dtype)


def test_bert_ffn_32x1_at_10_percent_uses_32x1_rows():
    decision = choose(detect(pruned(3072, 768, (32, 1), 0.1)), HOST)
    assert decision.kernel is not None
    assert decision.kernel.block == (32, 1) and decision.kernel.layout == "rows"
    assert decision.estimated_speedup > 5
    assert "32x1" in decision.reason


def test_dense_weight_stays_dense_with_reason():
    decision = choose(detect(pruned(256, 256, (1, 1), 1.0)), HOST)
    assert decision.kernel is None and "no zeros" in decision.reason


def test_barely_sparse_weight_stays_dense_with_reason():
    decision = choose(detect(pruned(256, 256, (1, 1), 0.6)), HOST)
    assert decision.kernel is None and "the speed of dense" in decision.reason and "needs 1.25x" in decision.reason


def test_half_dense_unstructured_stays_dense():
    decision = choose(detect(pruned(768, 768, (1, 1), 0.5)), HOST)
    assert decision.kernel is None


def test_float16_weight_gets_a_float16_kernel():
    decision = choose(detect(pruned(64, 64, (4, 1), 0.1, np.float16)), HOST)
    assert decision.kernel is not None and decision.kernel.dtype == "float16"


def test_bfloat16_weight_gets_a_bfloat16_kernel():
    weight = torch.from_numpy(pruned(768, 768, (32, 1), 0.05)).bfloat16()  # sparse enough for AMX CPUs too
    decision = choose(detect(weight), HOST)
    assert decision.kernel is not None and decision.kernel.dtype == "bfloat16"


def test_float64_weight_stays_dense_with_reason():
    decision = choose(detect(pruned(64, 64, (4, 1), 0.1, np.float64)), HOST)
    assert decision.kernel is None and "float64" in decision.reason


def test_half_precision_weight_stays_dense_on_cuda():
    decision = choose(detect(pruned(256, 256, (32, 32), 0.1, np.float16)), canonical_target("cuda"))
    assert decision.kernel is None and "float16" in decision.reason and "tensor cores" in decision.reason


@pytest.mark.parametrize("mcpu, sparse", [("znver3", True), ("znver4", True), ("sapphirerapids", False)])
def test_bfloat16_dense_speed_of_the_cpu_decides(mcpu, sparse):
    """At density 0.3 the 32x1 kernel beats float32 dense (and bfloat16 dense that runs at
    float32's speed, or at twice it with AVX-512 BF16) but not AMX's bfloat16 dense."""
    target = {"kind": "llvm", "mcpu": mcpu, "mtriple": "x86_64-linux-gnu"}
    weight = pruned(768, 768, (32, 1), 0.3)
    assert choose(detect(weight), target).kernel is not None
    decision = choose(detect(torch.from_numpy(weight).bfloat16()), target)
    assert (decision.kernel is not None) == sparse
    if not sparse:
        assert "the speed of dense" in decision.reason


@pytest.mark.parametrize("mcpu, sparse", [("znver4", True), ("sapphirerapids", False)])
def test_float16_without_native_support_makes_half_dense_layers_worth_it(mcpu, sparse):
    """PyTorch converts float16 where the CPU lacks AVX-512 FP16 (0.13x float32 measured): a
    half-dense unstructured weight, dense in float32, then runs faster sparse."""
    target = {"kind": "llvm", "mcpu": mcpu, "mtriple": "x86_64-linux-gnu"}
    weight = pruned(768, 768, (1, 1), 0.5)
    assert choose(detect(weight), target).kernel is None
    assert (choose(detect(weight.astype(np.float16)), target).kernel is not None) == sparse


def test_nan_weight_stays_dense():
    w = pruned(64, 64, (4, 1), 0.1)
    w[0, 0] = np.nan
    decision = choose(detect(w), HOST)
    assert decision.kernel is None and "NaN" in decision.reason


def test_all_zero_weight_is_sparse():
    decision = choose(detect(np.zeros((128, 64), np.float32)), HOST)
    assert decision.kernel is not None


def test_cuda_target_gets_gpu_blocks():
    decision = choose(detect(pruned(256, 256, (32, 32), 0.1)), canonical_target("cuda"))
    assert decision.kernel is not None and decision.kernel.block == (32, 32)
    assert decision.kernel.target_dict["kind"] == "cuda"


def test_cuda_target_keeps_unstructured_dense():
    decision = choose(detect(pruned(256, 256, (1, 1), 0.1)), canonical_target("cuda"))
    assert decision.kernel is None and "dense is estimated faster" in decision.reason


AVX512 = {"kind": "llvm", "mcpu": "znver4", "mtriple": "x86_64-linux-gnu"}
AVX2 = {"kind": "llvm", "mcpu": "znver2", "mtriple": "x86_64-linux-gnu"}


def test_token_tiles_fill_sixteen_accumulators_without_padding_a_short_batch():
    # Unstructured at 10%: vectors of tokens; 128 tokens fill 8 vectors (the most a tile spans).
    unstructured = detect(pruned(768, 768, (1, 1), 0.1))
    assert choose(unstructured, AVX512, tokens=128).kernel.tile == 128
    # A batch of 8 rows gets one vector of tokens, not 128 mostly-padding ones.
    assert choose(unstructured, AVX512, tokens=8).kernel.tile == 16
    # 4x4 blocks: 4 rows x 64 tokens = 16 accumulator vectors of 16 lanes.
    blocks = choose(detect(pruned(768, 768, (4, 4), 0.1)), AVX512, tokens=128).kernel
    assert blocks.layout == "tokens" and blocks.block == (4, 4) and blocks.tile == 64


def test_register_tiles_fit_the_targets_vector_registers():
    tall = detect(pruned(768, 768, (32, 1), 0.1))
    assert choose(tall, AVX512).kernel.tile == 8  # 8 rows x 2 vectors: 16 of 32 registers
    assert choose(tall, AVX2).kernel.tile == 2  # 2 rows x 4 vectors + 4 + 1: 13 of 16 (8 rows spilled)
    blocks = choose(detect(pruned(768, 768, (4, 4), 0.1)), AVX2, tokens=128).kernel
    assert blocks.tile == 32  # 4 rows x 4 vectors of 8 lanes


def test_cpu_pattern_convs_of_one_shape_share_a_kernel_whatever_their_taps():
    from sparsepass.passes.conv_analysis import detect_conv
    from sparsepass.passes.plan import choose_conv

    conv = {"stride": (1, 1), "padding": (1, 1), "dilation": (1, 1), "groups": 1, "batch": 1,
            "height": 28, "width": 28}
    rng = np.random.default_rng(0)
    structures = [detect_conv((rng.standard_normal((64, 64, 3, 3)) * sps.pattern_mask(64, 64, taps, 8, 0.5, 1))
                              .astype(np.float32)) for taps in (3, 4)]
    cpu = {choose_conv(s, conv, HOST).kernel for s in structures}
    cuda = {choose_conv(s, conv, canonical_target("cuda")).kernel for s in structures}
    assert len(cpu) == 1 and None not in cpu
    assert len(cuda) == 2 and {spec.taps for spec in cuda} == {3, 4}


def test_float32_computing_kernels_are_priced_at_half_on_amx_cpus():
    """The model was fitted on a Zen 5; on the AMX VM measured the "rows" kernel ran at about half
    its estimate, and bfloat16 32x1 at 20% ran 0.75x PyTorch's AMX dense: it must stay dense."""
    zen4 = {"kind": "llvm", "mcpu": "znver4", "mtriple": "x86_64-linux-gnu"}
    amx_cpu = {"kind": "llvm", "mcpu": "sapphirerapids", "mtriple": "x86_64-linux-gnu"}
    weight = pruned(3072, 768, (32, 1), 0.2)
    on_zen4, on_amx_cpu = choose(detect(weight), zen4), choose(detect(weight), amx_cpu)
    assert on_amx_cpu.estimated_speedup == pytest.approx(on_zen4.estimated_speedup / 2, rel=0.02)
    assert choose(detect(torch.from_numpy(weight).bfloat16()), amx_cpu).kernel is None
