"""Kernels built for bfloat16 or float16 activations read and write that dtype and round once.

Each result is computed in float32 from the widened (exact) inputs and rounded to the half dtype
when stored, so it is within half a unit in the last place of the exact result, plus the float32
bound of the computation itself. A missing block or a wrong rounding is far outside it.
"""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsepass.codegen.bsr_format import to_bsr
from sparsepass.codegen.build import get_kernel
from sparsepass.codegen.pattern_conv_cpu import ConvSpec
from sparsepass.codegen.pattern_format import FIELDS, max_taps, pack
from sparsepass.codegen.spec import KernelSpec
from sparsepass.codegen.target import canonical_target
from sparsepass.errors import SparsifyError
from sparsepass.ops.specs import no_residual
from sparsepass.ops.torch_ops import bsr_linear
from sparsepass.testing import gamma
from sparsepass.testing import strategies as sps

HALF = [torch.bfloat16, torch.float16]
BSR_FIELDS = ("data", "indices", "indptr", "parts", "bias")


def assert_rounded_once(actual: torch.Tensor, exact: torch.Tensor, float32_bound: torch.Tensor) -> None:
    """|actual - exact| <= u * (|exact| + e) + e, e the float32 computation's bound, u the half
    dtype's unit roundoff (plus half its smallest subnormal step)."""
    info = torch.finfo(actual.dtype)
    unit = info.eps / 2
    bound = unit * (exact.abs() + float32_bound) + float32_bound + info.tiny * unit
    excess = (actual.double() - exact).abs() - bound
    assert actual.dtype in HALF and not (excess > 0).any(), f"worst excess {float(excess.max()):.3g}"


def half_values(shape, dtype, generator=None) -> torch.Tensor:
    return torch.randn(shape, generator=generator).to(dtype)


@settings(max_examples=20)
@given(sps.pruned_weights(max_side=64), st.integers(1, 37), st.sampled_from(["rows", "tokens"]),
       st.sampled_from(HALF), st.sampled_from(["none", "relu"]), st.booleans())
def test_linear_kernel_rounds_once(case, rows, layout, dtype, epilogue, with_residual):
    weight, block, _ = case
    weight = weight.to(dtype)
    n, k = weight.shape
    bias, x = half_values(n, dtype), half_values((rows, k), dtype)
    residual = half_values((rows, n), dtype) if with_residual else None
    spec = KernelSpec.make(out_features=n, in_features=k, block=block, layout=layout,
                           tile=8 if layout == "rows" else 32, epilogue=epilogue,
                           residual=with_residual, dtype=str(dtype).removeprefix("torch."),
                           target=canonical_target())
    packed = to_bsr(weight.float().numpy(), block, spec.parts, bias.float().numpy())
    y = bsr_linear(x, *[torch.from_numpy(getattr(packed, f)) for f in BSR_FIELDS], residual,
                   spec.to_json(), "layer")
    pre = x.double() @ weight.double().T + bias.double() + (residual.double() if with_residual else 0)
    exact = F.relu(pre) if epilogue == "relu" else pre
    magnitude = x.double().abs() @ weight.double().abs().T + bias.double().abs() \
        + (residual.double().abs() if with_residual else 0)
    assert_rounded_once(y, exact, gamma(k + 2) * magnitude)


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("positions", [7, 49, 200])
def test_channels_kernel_rounds_once(dtype, positions):
    """The 1x1-conv layout reads X in place: whole tiles, a leftover tile, a map under a vector."""
    weight = (torch.randn(48, 40) * torch.from_numpy(sps.block_mask(48, 40, (4, 1), 0.3, 1))).to(dtype)
    bias, x = half_values(48, dtype), half_values((2, 40, positions), dtype)
    residual = half_values((2, 48, positions), dtype)
    spec = KernelSpec.make(out_features=48, in_features=40, block=(4, 1), layout="channels", tile=32,
                           residual=True, dtype=str(dtype).removeprefix("torch."), target=canonical_target())
    packed = to_bsr(weight.float().numpy(), (4, 1), spec.parts, bias.float().numpy())
    y = torch.empty(2, 48, positions, dtype=dtype)
    get_kernel(spec)(x, *[torch.from_numpy(getattr(packed, f)) for f in BSR_FIELDS], residual, y)
    w = weight.double()
    exact = torch.einsum("nk,bkp->bnp", w, x.double()) + bias.double()[:, None] + residual.double()
    magnitude = torch.einsum("nk,bkp->bnp", w.abs(), x.double().abs()) + bias.double().abs()[:, None] \
        + residual.double().abs()
    assert_rounded_once(y, exact, gamma(40 + 2) * magnitude)


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("size, stride, residual", [(14, 1, True), (7, 1, False), (15, 2, False)])
def test_pattern_conv_rounds_once(dtype, size, stride, residual):
    """Row per vector (14x14), several rows packed in a vector (7x7), stride 2."""
    generator = torch.Generator().manual_seed(size)
    channels = 24
    mask = torch.from_numpy(sps.pattern_mask(channels, channels, 4, 8, 0.5, size))
    weight = (torch.randn(channels, channels, 3, 3, generator=generator) * mask).to(dtype)
    bias, x = half_values(channels, dtype, generator), half_values((2, channels, size, size), dtype, generator)
    spec = ConvSpec.make(in_channels=channels, out_channels=channels, height=size, width=size, stride=stride,
                         padding=1, taps=max_taps(weight.float().numpy()), epilogue="relu", residual=residual,
                         dtype=str(dtype).removeprefix("torch."), target=canonical_target())
    packed = pack(spec, weight.float().numpy(), bias.float().numpy())
    pre = F.conv2d(x.double(), weight.double(), bias.double(), stride=stride, padding=1)
    res = half_values(pre.shape, dtype, generator) if residual else no_residual("cpu")
    y = torch.empty(pre.shape, dtype=dtype)
    get_kernel(spec)(x, *[torch.from_numpy(getattr(packed, f)) for f in FIELDS], res, y)
    exact = F.relu(pre + res.double()) if residual else F.relu(pre)
    magnitude = F.conv2d(x.double().abs(), weight.double().abs(), bias.double().abs(), stride=stride, padding=1)
    magnitude = magnitude + (res.double().abs() if residual else 0)
    assert_rounded_once(y, exact, gamma(channels * 9 + 2) * magnitude)


def test_input_of_another_dtype_is_refused_naming_the_layer():
    weight = torch.randn(32, 16) * torch.from_numpy(sps.block_mask(32, 16, (32, 1), 0.5, 0))
    spec = KernelSpec.make(out_features=32, in_features=16, block=(32, 1), layout="rows", tile=8,
                           dtype="bfloat16", target=canonical_target())
    packed = to_bsr(weight.numpy(), (32, 1), spec.parts)
    arrays = [torch.from_numpy(getattr(packed, f)) for f in BSR_FIELDS]
    with pytest.raises(SparsifyError, match=r"encoder\.fc.*torch\.float32.*torch\.bfloat16"):
        bsr_linear(torch.randn(4, 16), *arrays, None, spec.to_json(), "encoder.fc")


def test_unknown_activation_dtype_is_refused():
    with pytest.raises(ValueError, match="float64"):
        KernelSpec.make(out_features=32, in_features=16, block=(32, 1), layout="rows", tile=8,
                        dtype="float64", target=canonical_target())


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("size, stride, channels", [((13, 17), 1, (20, 17)), ((9, 9), 1, (8, 6)),
                                                     ((12, 25), 1, (6, 5)), ((16, 4), 2, (4, 10))])
def test_pattern_conv_writes_its_output_and_nothing_else(dtype, size, stride, channels):
    """Rows that end one lane into a vector (widths 9, 17, 25) and several rows to a vector:
    LLVM 22 once stored such a bfloat16 tail as 32 bits, over the next filter's first output
    and past the end of the output."""
    (height, width), (c_in, c_out) = size, channels
    generator = torch.Generator().manual_seed(width)
    mask = torch.from_numpy(sps.pattern_mask(c_out, c_in, 4, 4, 0.5, width))
    weight = (torch.randn(c_out, c_in, 3, 3, generator=generator) * mask).to(dtype)
    bias, x = half_values(c_out, dtype, generator), half_values((2, c_in, height, width), dtype, generator)
    spec = ConvSpec.make(in_channels=c_in, out_channels=c_out, height=height, width=width, stride=stride,
                         padding=1, taps=max_taps(weight.float().numpy()), epilogue="relu",
                         dtype=str(dtype).removeprefix("torch."), target=canonical_target())
    packed = pack(spec, weight.float().numpy(), bias.float().numpy())
    shape = (2, c_out, spec.out_height, spec.out_width)
    size_out, guard = 2 * c_out * spec.out_height * spec.out_width, 64
    storage = torch.full((size_out + 2 * guard,), 7.0, dtype=dtype)
    y = storage[guard:guard + size_out].view(shape)
    get_kernel(spec)(x, *[torch.from_numpy(getattr(packed, f)) for f in FIELDS], no_residual("cpu"), y)
    assert (storage[:guard] == 7).all() and (storage[guard + size_out:] == 7).all()
    exact = F.relu(F.conv2d(x.double(), weight.double(), bias.double(), stride=stride, padding=1))
    magnitude = F.conv2d(x.double().abs(), weight.double().abs(), bias.double().abs(), stride=stride, padding=1)
    assert_rounded_once(y, exact, gamma(c_in * 9 + 2) * magnitude)
