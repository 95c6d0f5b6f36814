"""The generated CPU kernels equal a dense reference, for every layout, block and epilogue."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from sparsepass.codegen.bsr_format import to_bsr
from sparsepass.codegen.build import primfunc
from sparsepass.codegen.spec import EPILOGUES, KernelSpec
from sparsepass.codegen.target import canonical_target
from sparsepass.ops.torch_ops import bsr_linear
from sparsepass.testing import assert_linear_close, linear_error_bound
from sparsepass.testing import strategies as sps
from sparsepass.testing.epilogues import TORCH_EPILOGUES


def run_kernel(weight, bias, x, block, layout, tile, epilogue="none", residual=None):
    spec = KernelSpec.make(out_features=weight.shape[0], in_features=weight.shape[1], block=block,
                           layout=layout, tile=tile, epilogue=epilogue, residual=residual is not None,
                           target=canonical_target())
    packed = to_bsr(weight.numpy(), block, spec.parts, None if bias is None else bias.numpy())
    arrays = [torch.from_numpy(getattr(packed, f)) for f in ("data", "indices", "indptr", "parts", "bias")]
    return bsr_linear(x, *arrays, residual, spec.to_json(), "test")


@given(sps.pruned_weights(max_side=80), st.integers(1, 37), st.booleans(),
       st.sampled_from(["rows", "tokens"]), st.sampled_from([1, 4, 8, 16, 32]))
def test_kernel_equals_dense(case, rows, with_bias, layout, tile):
    weight, block, _ = case
    x = torch.randn(rows, weight.shape[1])
    bias = torch.randn(weight.shape[0]) if with_bias else None
    y = run_kernel(weight, bias, x, block, layout, tile)
    assert_linear_close(y, F.linear(x, weight, bias), x, weight, bias)


@pytest.mark.parametrize("epilogue", [e for e in EPILOGUES if e != "none"])
@pytest.mark.parametrize("layout", ["rows", "tokens"])
def test_epilogues(epilogue, layout):
    weight = torch.randn(40, 24) * torch.from_numpy(sps.block_mask(40, 24, (8, 1), 0.5, 3))
    bias, x = torch.randn(40), torch.randn(19, 24)
    y = run_kernel(weight, bias, x, (8, 1), layout, 8, epilogue)
    expected = TORCH_EPILOGUES[epilogue](F.linear(x, weight, bias))
    # Activations are 1-Lipschitz with bounded slope; their own rounding adds a few ulps.
    pre = F.linear(x, weight, bias)
    torch.testing.assert_close(y, expected, rtol=4 * torch.finfo(torch.float32).eps * 8,
                               atol=float((pre.abs().max() + 1) * 1e-6))


def test_generated_function_is_marked():
    spec = KernelSpec.make(out_features=64, in_features=32, block=(32, 1), layout="rows", tile=8,
                           target=canonical_target())
    func = primfunc(spec)
    assert func.attrs["sparsepass.kernel"] == "bsr_linear.rows"


@given(sps.pruned_weights(max_side=60), st.integers(1, 37), st.sampled_from(["rows", "tokens"]),
       st.sampled_from(["none", "relu"]))
def test_residual_is_added_before_the_epilogue(case, rows, layout, epilogue):
    weight, block, _ = case
    x, bias = torch.randn(rows, weight.shape[1]), torch.randn(weight.shape[0])
    residual = torch.randn(rows, weight.shape[0])
    y = run_kernel(weight, bias, x, block, layout, 8 if layout == "rows" else 32, epilogue, residual)
    pre = F.linear(x, weight, bias) + residual
    expected = TORCH_EPILOGUES[epilogue](pre)
    bound = linear_error_bound(x, weight) + torch.finfo(torch.float32).eps * (pre.abs() + residual.abs() + 1)
    assert ((y - expected).abs() <= bound).all()


@given(sps.pruned_weights(max_side=40), st.integers(1, 3), st.integers(1, 150), st.sampled_from([16, 32, 64, 128]),
       st.sampled_from(["none", "relu"]), st.booleans())
def test_channels_layout_equals_a_1x1_conv(case, batch, positions, tile, epilogue, with_residual):
    """NCHW in place: whole tiles, leftovers in one tile of 1 to tile/16 vectors (the last one
    moved back over computed positions), maps narrower than a vector, ragged blocks."""
    from sparsepass.codegen.build import get_kernel
    from sparsepass.ops.specs import no_residual

    weight, block, _ = case
    n, k = weight.shape
    spec = KernelSpec.make(out_features=n, in_features=k, block=block, layout="channels", tile=tile,
                           epilogue=epilogue, residual=with_residual, target=canonical_target())
    bias = torch.randn(n)
    packed = to_bsr(weight.numpy(), block, spec.parts, bias.numpy())
    arrays = [torch.from_numpy(getattr(packed, f)) for f in ("data", "indices", "indptr", "parts", "bias")]
    x = torch.randn(batch, k, positions)
    residual = torch.randn(batch, n, positions) if with_residual else None
    y = torch.empty(batch, n, positions)
    get_kernel(spec)(x, *arrays, residual if with_residual else no_residual("cpu"), y)
    pre = torch.einsum("nk,bkp->bnp", weight, x) + bias[:, None]
    pre = pre + residual if with_residual else pre
    expected = TORCH_EPILOGUES[epilogue](pre)
    flat_x = x.transpose(1, 2).reshape(-1, k)
    bound = linear_error_bound(flat_x, weight).reshape(batch, positions, n).transpose(1, 2) \
        + torch.finfo(torch.float32).eps * (pre.abs() + bias.abs()[:, None] + (
            residual.abs() if with_residual else 0) + 1)
    assert ((y - expected).abs() <= bound).all()
