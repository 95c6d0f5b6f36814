"""The CPU max pool equals PyTorch's bit for bit (it only compares), NaN included, at any window,
stride, padding and ceil mode PyTorch accepts."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsepass.codegen.build import get_kernel
from sparsepass.codegen.max_pool_cpu import PoolSpec
from sparsepass.codegen.target import canonical_target


@st.composite
def pools(draw):
    kernel = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    height = draw(st.integers(max(1, kernel[0] - 2 * padding[0]), 40))
    width = draw(st.integers(max(1, kernel[1] - 2 * padding[1]), 70))
    return PoolSpec.make(height=height, width=width, kernel=kernel, stride=stride, padding=padding,
                         ceil_mode=draw(st.booleans()), epilogue=draw(st.sampled_from(["none", "relu"])),
                         target=canonical_target())


def _expected(x: torch.Tensor, spec: PoolSpec) -> torch.Tensor:
    y = F.max_pool2d(x, spec.kernel, spec.stride, spec.padding, ceil_mode=spec.ceil_mode)
    return torch.relu(y) if spec.epilogue == "relu" else y


def _run(x: torch.Tensor, spec: PoolSpec) -> torch.Tensor:
    n, c = x.shape[:2]
    y = torch.empty(n, c, spec.out_height, spec.out_width, dtype=x.dtype)
    get_kernel(spec)(x.reshape(n * c, spec.height, spec.width), y.view(n * c, spec.out_height, spec.out_width))
    return y


@settings(max_examples=25)
@given(spec=pools(), planes=st.integers(1, 5), seed=st.integers(0, 99), nans=st.integers(0, 3))
def test_max_pool_equals_pytorch(spec, planes, seed, nans):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(1, planes, spec.height, spec.width, generator=generator)
    flat = x.view(-1)
    flat[torch.randint(flat.numel(), (nans,), generator=generator)] = float("nan")
    expected = _expected(x, spec)
    assert tuple(expected.shape[2:]) == (spec.out_height, spec.out_width)
    assert torch.equal(_run(x, spec).isnan(), expected.isnan())
    assert torch.equal(_run(x, spec).nan_to_num(0.0), expected.nan_to_num(0.0))


def test_resnet_stem_pool_with_relu():
    spec = PoolSpec.make(height=112, width=112, kernel=(3, 3), stride=(2, 2), padding=(1, 1),
                         epilogue="relu", target=canonical_target())
    x = torch.randn(2, 64, 112, 112)
    assert torch.equal(_run(x, spec), F.max_pool2d(F.relu(x), 3, 2, 1))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_pool_equals_pytorch_bit_for_bit(dtype):
    spec = PoolSpec.make(height=28, width=28, kernel=(3, 3), stride=(2, 2), padding=(1, 1),
                         epilogue="relu", dtype=str(dtype).removeprefix("torch."), target=canonical_target())
    x = torch.randn(2, 8, 28, 28).to(dtype)
    y = _run(x, spec)
    assert y.dtype == dtype and torch.equal(y, F.max_pool2d(F.relu(x), 3, 2, 1))


def test_padding_over_half_the_window_is_refused():
    with pytest.raises(ValueError, match="exceeds half the window"):
        PoolSpec.make(height=8, width=8, kernel=(2, 2), stride=(1, 1), padding=(2, 0), target=canonical_target())
