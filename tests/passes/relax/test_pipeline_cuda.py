"""pipeline(cuda): builds, exports and compiles with nvcc on a machine without a GPU."""

import pytest
import torch
import torch.nn as nn
import tvm

from sparsepass import frontends, prune
from sparsepass.codegen.cuda_compile import (
    CI_ARCHS,
    compile_binary,
    module_cuda_source,
    nvcc_available,
)
from sparsepass.codegen.target import canonical_target, tvm_target
from sparsepass.passes import relax as sp
from sparsepass.testing.relax import call_tir_targets


@pytest.fixture(scope="module")
def cuda_build(tmp_path_factory):
    model = nn.Sequential(nn.Linear(256, 512), nn.GELU(), nn.Linear(512, 256), nn.LayerNorm(256)).eval()
    prune.prune_linears(model, (32, 32), 0.1)
    mod = frontends.to_relax(model, (torch.randn(64, 256),))
    target = canonical_target("cuda")
    rewritten = sp.SparsifyLinear(target)(mod)
    executable = tvm.compile(mod, target=tvm_target(target), relax_pipeline=sp.pipeline(target))
    path = tmp_path_factory.mktemp("cuda") / "model.so"
    executable.export_library(str(path))
    return rewritten, executable, path


def test_linears_become_cuda_kernels(cuda_build):
    rewritten, _, _ = cuda_build
    kernels = call_tir_targets(rewritten)
    assert len(kernels) == 2
    assert all(rewritten[k].attrs["sparsepass.kernel"] == "bsr_linear.cuda" for k in kernels)
    assert sp.report(rewritten).rewritten == 2


def test_export_library_without_a_gpu(cuda_build):
    _, _, path = cuda_build
    assert path.stat().st_size > 10_000


@pytest.mark.skipif(not nvcc_available(), reason="nvcc is not installed on this machine")
@pytest.mark.parametrize("arch", CI_ARCHS)
def test_whole_module_cuda_compiles_with_nvcc(cuda_build, arch):
    _, executable, _ = cuda_build
    assert len(compile_binary(module_cuda_source(executable.mod), arch)) > 1000
