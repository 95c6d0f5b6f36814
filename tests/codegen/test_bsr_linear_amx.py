"""The AMX kernel (bfloat16 R x 32 blocks on Intel AMX tiles): packing, compilation, results.

It compiles on any x86-64 machine (LLVM is told the AMX features); it runs only where the CPU has
AMX, and there each result must be within half a bfloat16 ulp of the exact one plus the float32
bound of the computation (AMX accumulates in float32), as the other half-precision kernels are.
"""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsepass.codegen import bsr_linear_amx
from sparsepass.codegen.bsr_format import amx_tiles, bfloat16_bits, pack_for, to_bsr
from sparsepass.codegen.build import compile_spec
from sparsepass.codegen.spec import KernelSpec
from sparsepass.codegen.target import canonical_target, half_precision_features
from sparsepass.ops.torch_ops import bsr_linear
from sparsepass.passes.analysis import detect
from sparsepass.passes.plan import choose
from sparsepass.testing import gamma
from sparsepass.testing import strategies as sps
from tests.codegen.test_io_dtype import assert_rounded_once

HOST = canonical_target()
needs_amx = pytest.mark.skipif("amx-bf16" not in half_precision_features(HOST),
                               reason="this CPU has no AMX (amx_bf16): the AMX kernel is compiled, not run")
SAPPHIRE_RAPIDS = {"kind": "llvm", "mcpu": "sapphirerapids", "mtriple": "x86_64-linux-gnu"}
ZEN4 = {"kind": "llvm", "mcpu": "znver4", "mtriple": "x86_64-linux-gnu"}


def amx_spec(n, k, rows_per_block, target=HOST, cols=32, dtype="bfloat16", **fields) -> KernelSpec:
    return KernelSpec.make(out_features=n, in_features=k, block=(rows_per_block, cols), layout="amx",
                           tile=bsr_linear_amx.TOKENS, dtype=dtype, target=target, **fields)


def block_pruned(n, k, block, density, seed) -> torch.Tensor:
    mask = torch.from_numpy(sps.block_mask(n, k, block, density, seed))
    return (torch.randn(n, k, generator=torch.Generator().manual_seed(seed)) * mask).bfloat16()


def test_bfloat16_bits_round_to_nearest_even_like_torch():
    values = torch.randn(1000, generator=torch.Generator().manual_seed(0)) * 1e3
    values = torch.cat([values, torch.tensor([1.00390625, 1.01171875, -2.0, 0.0, 3e-39])])  # ties, subnormal
    expected = values.bfloat16().view(torch.int16).numpy()
    assert (bfloat16_bits(values.numpy()) == expected).all()


@pytest.mark.parametrize("cols", [32, 8, 2])
def test_amx_tiles_pair_columns_of_each_16_outputs(cols):
    """Tile o, row p holds outputs o*16+j as the column pair (2p, 2p+1): TDPBF16PS's B operand."""
    weight = block_pruned(64, 96, (32, cols), 0.5, 3)
    bsr = to_bsr(weight.float().numpy(), (32, cols), 2)
    tiles = torch.from_numpy(amx_tiles(bsr)).view(torch.bfloat16).float()  # [nnzb, 2, cols / 2, 32]
    assert tiles.shape[1:] == (2, cols // 2, 32)
    dense = weight.float()
    for b in range(bsr.nnzb):
        row = int(np.searchsorted(bsr.indptr, b, side="right")) - 1
        col = int(bsr.indices[b])
        block = dense[row * 32:(row + 1) * 32, col * cols:(col + 1) * cols]  # [outputs, columns]
        pairs = block.reshape(2, 16, cols // 2, 2).permute(0, 2, 1, 3).reshape(2, cols // 2, 32)  # [o, p, (j, h)]
        assert torch.equal(tiles[b], pairs)


@pytest.mark.parametrize("spec", [amx_spec(32, 64, 16, epilogue="relu", residual=True),
                                  amx_spec(80, 96, 32, epilogue="gelu"),
                                  amx_spec(64, 32, 32, target=SAPPHIRE_RAPIDS),
                                  amx_spec(64, 40, 32, cols=4),
                                  amx_spec(64, 48, 16, cols=8, dtype="float32", epilogue="gelu")])
def test_amx_kernel_compiles_to_tile_instructions_on_any_x86(spec):
    executable = compile_spec(spec)
    assembly = executable.mod.inspect_source("asm")
    for instruction in ("ldtilecfg", "tileloadd", "tdpbf16ps", "tilestored", "tilerelease"):
        assert instruction in assembly
    if spec.dtype == "float32":  # X is rounded to bfloat16, 16 at a time, before the tiles load it
        assert "vcvtneps2bf16" in assembly


@pytest.mark.parametrize("block, dtype, k, reason", [
    ((32, 1), "bfloat16", 64, "block 32x1"), ((8, 32), "bfloat16", 64, "block 8x32"),
    ((32, 6), "bfloat16", 66, "block 32x6"), ((32, 32), "float16", 64, "bfloat16 activations"),
    ((32, 32), "bfloat16", 48, "not a multiple of 32"), ((16, 8), "bfloat16", 44, "not a multiple of 8"),
    ((32, 8), "float32", 40, "not a multiple of 16")])
def test_amx_kernel_refuses_what_it_cannot_run(block, dtype, k, reason):
    spec = KernelSpec.make(out_features=64, in_features=k, block=block, layout="amx", tile=32, dtype=dtype,
                           target=HOST)
    with pytest.raises(ValueError, match=reason):
        bsr_linear_amx.generate(spec)


def test_planner_takes_amx_for_bfloat16_blocks_2_to_32_wide_only_where_the_cpu_has_it():
    weight = block_pruned(768, 768, (32, 32), 0.1, 0)
    assert choose(detect(weight), SAPPHIRE_RAPIDS).kernel.layout == "amx"
    speedups = []
    for block in [(32, 16), (32, 8), (32, 4)]:  # narrower blocks: same weights, more tile multiplies
        decision = choose(detect(block_pruned(768, 768, block, 0.1, 0)), SAPPHIRE_RAPIDS)
        assert (decision.kernel.layout, decision.kernel.block) == ("amx", block)
        speedups.append(decision.estimated_speedup)
    assert speedups == sorted(speedups, reverse=True) and speedups[0] > 1.5 * speedups[-1]
    assert choose(detect(block_pruned(768, 768, (16, 16), 0.1, 0)), SAPPHIRE_RAPIDS).kernel.block == (16, 16)
    assert choose(detect(weight), ZEN4).kernel.layout == "rows"
    assert choose(detect(weight.float()), SAPPHIRE_RAPIDS).kernel.layout == "rows"  # float32: no AMX
    narrow = block_pruned(768, 768, (32, 1), 0.05, 0)  # 32x32 blocks would store most of it
    assert choose(detect(narrow), SAPPHIRE_RAPIDS).kernel.layout == "rows"


@needs_amx
@settings(max_examples=20, deadline=None)
@given(st.sampled_from([16, 32]), st.sampled_from(bsr_linear_amx.BLOCK_COLS), st.integers(1, 5), st.integers(1, 4),
       st.integers(1, 80), st.sampled_from([0.2, 0.5, 1.0]), st.sampled_from(["none", "relu", "gelu"]),
       st.booleans(), st.integers(0, 2**16))
def test_amx_kernel_rounds_once(rows_per_block, cols, block_rows, block_cols, tokens, density, epilogue,
                                with_residual, seed):
    """Several X tiles and a ragged last one, a short last block row, empty block rows."""
    n = rows_per_block * block_rows - (seed % 7 if rows_per_block * block_rows > 7 else 0)
    k = cols * block_cols
    weight = block_pruned(n, k, (rows_per_block, cols), density, seed)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, k, generator=generator).bfloat16()
    bias = torch.randn(n, generator=generator).bfloat16()
    residual = torch.randn(tokens, n, generator=generator).bfloat16() if with_residual else None
    spec = amx_spec(n, k, rows_per_block, cols=cols, epilogue=epilogue, residual=with_residual)
    arrays = pack_for("amx", weight.float().numpy(), spec.block, spec.parts, bias.float().numpy())
    y = bsr_linear(x, *[torch.from_numpy(a) for a in arrays.values()], residual, spec.to_json(), "layer")
    pre = x.double() @ weight.double().T + bias.double() + (residual.double() if with_residual else 0)
    exact = {"none": pre, "relu": torch.relu(pre), "gelu": torch.nn.functional.gelu(pre)}[epilogue]
    magnitude = x.double().abs() @ weight.double().abs().T + bias.double().abs() \
        + (residual.double().abs() if with_residual else 0)
    # GELU's float32 evaluation adds its own few ulps of the float32 result.
    bound = gamma(k + 2) * magnitude + (8 * 2.0**-24 * pre.abs() if epilogue == "gelu" else 0)
    assert_rounded_once(y, exact, bound)


@needs_amx
@pytest.mark.parametrize("tokens", [128, 77])
def test_amx_kernel_gives_the_same_bits_on_one_thread_and_on_several(tokens):
    """Each thread configures its own tiles and accumulates in its own buffer (shared ones raced)."""
    n, k = 768, 768
    weight = block_pruned(n, k, (32, 32), 0.3, seed=tokens)
    x = torch.randn(tokens, k, generator=torch.Generator().manual_seed(tokens)).bfloat16()
    spec = amx_spec(n, k, 32, epilogue="gelu")
    arrays = [torch.from_numpy(a) for a in pack_for("amx", weight.float().numpy(), spec.block, spec.parts).values()]
    threads = torch.get_num_threads()
    try:
        outputs = []
        for count in (1, max(2, threads)):
            torch.set_num_threads(count)
            outputs.append([bsr_linear(x, *arrays, None, spec.to_json(), "layer") for _ in range(5)])
    finally:
        torch.set_num_threads(threads)
    pre = x.double() @ weight.double().T
    bound = gamma(k + 2) * (x.double().abs() @ weight.double().abs().T) + 8 * 2.0**-24 * pre.abs()
    assert_rounded_once(outputs[0][0], torch.nn.functional.gelu(pre), bound)
    for y in outputs[0] + outputs[1]:
        assert torch.equal(y, outputs[0][0])


@needs_amx
@settings(max_examples=20, deadline=None)
@given(st.sampled_from([16, 32]), st.sampled_from(bsr_linear_amx.BLOCK_COLS), st.integers(1, 4), st.integers(1, 4),
       st.integers(1, 80), st.sampled_from([0.2, 0.5, 1.0]), st.sampled_from(["none", "relu", "gelu"]),
       st.booleans(), st.integers(0, 2**16))
def test_amx_kernel_multiplies_float32_as_pytorch_does_under_bf16_precision(
        rows_per_block, cols, block_rows, block_cols, tokens, density, epilogue, with_residual, seed):
    """float32 X and W rounded to bfloat16 (nearest even), products summed in float32, float32 Y:
    PyTorch's linear under fp32_precision "bf16"; the bias and residual are added in float32."""
    n = rows_per_block * block_rows - (seed % 7 if rows_per_block * block_rows > 7 else 0)
    k = max(cols, 16) * block_cols  # whole runs of 16 columns for the rounding of X
    weight = block_pruned(n, k, (rows_per_block, cols), density, seed).float() * 1.001  # not bfloat16 values
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, k, generator=generator)
    bias = torch.randn(n, generator=generator)
    residual = torch.randn(tokens, n, generator=generator) if with_residual else None
    spec = amx_spec(n, k, rows_per_block, cols=cols, dtype="float32", epilogue=epilogue, residual=with_residual)
    arrays = pack_for("amx", weight.numpy(), spec.block, spec.parts, bias.numpy())
    y = bsr_linear(x, *[torch.from_numpy(a) for a in arrays.values()], residual, spec.to_json(), "layer")
    xb, wb = x.bfloat16().double(), weight.bfloat16().double()
    pre = xb @ wb.T + bias.double() + (residual.double() if with_residual else 0)
    exact = {"none": pre, "relu": torch.relu(pre), "gelu": torch.nn.functional.gelu(pre)}[epilogue]
    magnitude = xb.abs() @ wb.abs().T + bias.double().abs() + (residual.double().abs() if with_residual else 0)
    bound = gamma(k + 2) * magnitude + (8 * 2.0**-24 * pre.abs() if epilogue == "gelu" else 0)
    assert y.dtype == torch.float32
    excess = (y.double() - exact).abs() - bound
    assert not (excess > 0).any(), f"worst excess {float(excess.max()):.3g}"
    exact_float32 = x.double() @ weight.double().T + bias.double() + (residual.double() if with_residual else 0)
    if epilogue == "none" and density == 1.0 and k >= 64:  # bfloat16 products, not float32 ones
        assert (y.double() - exact_float32).abs().max() > bound.max()


def test_planner_takes_amx_for_float32_only_when_bfloat16_products_are_allowed():
    weight = block_pruned(768, 3072, (32, 32), 0.1, 0).float()
    allowed = choose(detect(weight), SAPPHIRE_RAPIDS, float32_in_bfloat16=True)
    assert (allowed.kernel.layout, allowed.kernel.dtype) == ("amx", "float32")
    assert "bfloat16 products" in allowed.reason
    exact = choose(detect(weight), SAPPHIRE_RAPIDS)
    assert exact.kernel.layout == "rows" and "bfloat16" not in exact.reason
    # PyTorch's dense linear also multiplies in bfloat16 then: the bar the kernel must clear is higher.
    assert allowed.dense_cost < exact.dense_cost
    assert choose(detect(weight), ZEN4, float32_in_bfloat16=True).kernel.layout == "rows"  # no AMX
    ragged = block_pruned(3072, 776, (32, 8), 0.1, 0).float()  # 776 columns: no whole runs of 16 to round
    assert "amx" not in choose(detect(ragged), SAPPHIRE_RAPIDS, float32_in_bfloat16=True).reason
    assert "amx" in choose(detect(ragged.bfloat16()), SAPPHIRE_RAPIDS).reason


@needs_amx
def test_float32_amx_kernel_gives_the_same_bits_on_one_thread_and_on_several():
    """X is rounded by one parallel pass, before the tiles of any thread load it."""
    n, k, tokens = 768, 3072, 77
    weight = block_pruned(n, k, (32, 32), 0.3, seed=1).float()
    x = torch.randn(tokens, k, generator=torch.Generator().manual_seed(1))
    spec = amx_spec(n, k, 32, dtype="float32", epilogue="gelu")
    arrays = [torch.from_numpy(a) for a in pack_for("amx", weight.numpy(), spec.block, spec.parts).values()]
    threads = torch.get_num_threads()
    try:
        outputs = []
        for count in (1, max(2, threads)):
            torch.set_num_threads(count)
            outputs += [bsr_linear(x, *arrays, None, spec.to_json(), "layer") for _ in range(3)]
    finally:
        torch.set_num_threads(threads)
    for y in outputs:
        assert torch.equal(y, outputs[0])
