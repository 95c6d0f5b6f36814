"""The vectorisable epilogue functions meet their documented error bounds."""

import pytest
import torch

from sparsepass.codegen.epilogue import ERROR_BOUNDS, epilogue_fn
from sparsepass.codegen.target import canonical_target, tvm_target
from sparsepass.codegen.tvm_api import T, tvm
from sparsepass.testing.epilogues import TORCH_EPILOGUES

EXACT = {name: fn for name, fn in TORCH_EPILOGUES.items() if name != "none"}


def elementwise(fn):
    @T.prim_func
    def apply(a: T.handle, b: T.handle):
        T.func_attr({"global_symbol": "apply", "tirx.noalias": True})
        n = T.int64()
        A = T.match_buffer(a, (n,), "float32")
        B = T.match_buffer(b, (n,), "float32")
        for i in T.serial(n // 16):
            for j in T.vectorized(16):
                B[i * 16 + j] = fn(A[i * 16 + j])

    return tvm.compile(tvm.IRModule({"apply": apply}), target=tvm_target(canonical_target())).mod["apply"]


@pytest.mark.parametrize("name", sorted(EXACT))
def test_error_within_documented_bound(name):
    x = torch.cat([torch.linspace(-60, 60, 160000), torch.linspace(-1, 1, 160000),
                   torch.tensor([0.0, -0.0, 1e-30, -1e-30, 1e-7, -1e-7, 3.0e38, -3.0e38] * 2)]).float()
    out = torch.empty_like(x)
    elementwise(epilogue_fn(name))(x, out)
    exact = EXACT[name](x.double())
    a, b = ERROR_BOUNDS[name]
    bound = a + b * x.double().abs() + torch.finfo(torch.float32).eps * exact.abs()
    error = (out.double() - exact).abs()
    assert torch.isfinite(out).all()
    assert (error <= bound).all(), f"worst at x={x[(error - bound).argmax()].item()}"
