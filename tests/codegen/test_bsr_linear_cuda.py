"""The CUDA BSR kernel: its logic checked on the CPU, its source compiled by nvcc, run on a GPU if any."""

import re

import pytest
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
import tvm
from hypothesis import given
from hypothesis import strategies as st

from sparsepass import SparsifyError, passes, prune
from sparsepass.codegen import bsr_linear_cuda
from sparsepass.codegen.bsr_format import to_bsr
from sparsepass.codegen.cuda_compile import CI_ARCHS, compile_binary, cuda_source, nvcc_available
from sparsepass.codegen.spec import KernelSpec
from sparsepass.codegen.target import canonical_target, tvm_target
from sparsepass.testing import assert_linear_close
from sparsepass.testing import strategies as sps
from sparsepass.testing.epilogues import TORCH_EPILOGUES
from sparsepass.testing.tolerance import linear_error_bound

CUDA = canonical_target("cuda")
#: GPU shapes, plus one whose height is no multiple of 4 (one output per thread, 126 threads).
GPU_BLOCKS = st.sampled_from([(16, 1), (32, 1), (16, 16), (32, 32), (32, 4), (64, 2), (18, 3)])
needs_nvcc = pytest.mark.skipif(not nvcc_available(), reason="nvcc is not installed on this machine")
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(),
                               reason="no NVIDIA GPU here: CUDA kernels are compiled on every run, executed "
                                      "only where a GPU is present (see benchmarks/gpu/)")


def spec_for(n, k, block, epilogue="none", residual=False):
    return KernelSpec.make(out_features=n, in_features=k, block=block, layout="rows", tile=1,
                           epilogue=epilogue, residual=residual, target=CUDA)


def run_emulated(weight, bias, x, block, epilogue="none", residual=None):
    spec = spec_for(weight.shape[0], weight.shape[1], block, epilogue, residual is not None)
    func = bsr_linear_cuda.generate_emulated(spec).with_attr("global_symbol", "emulated")
    kernel = tvm.compile(tvm.IRModule({"emulated": func}), target=tvm_target(canonical_target())).mod["emulated"]
    packed = to_bsr(weight.numpy(), block, spec.parts, None if bias is None else bias.numpy())
    y = torch.empty(x.shape[0], weight.shape[0])
    kernel(x, *[torch.from_numpy(getattr(packed, f)) for f in ("data", "indices", "indptr", "parts", "bias")],
           torch.zeros(1) if residual is None else residual, y)
    return y


# Rows up to 150 span several row tiles for every block height (64 rows for R=32, 128 for R=16).
@given(sps.pruned_weights(max_side=90, blocks=GPU_BLOCKS), st.integers(1, 150), st.booleans())
def test_emulated_kernel_equals_dense(case, rows, with_bias):
    weight, block, _ = case
    bias = torch.randn(weight.shape[0]) if with_bias else None
    x = torch.randn(rows, weight.shape[1])
    assert_linear_close(run_emulated(weight, bias, x, block), F.linear(x, weight, bias), x, weight, bias)


@given(sps.pruned_weights(max_side=70, blocks=GPU_BLOCKS), st.integers(1, 80),
       st.sampled_from(["none", "relu", "gelu", "gelu_tanh", "silu", "tanh"]))
def test_emulated_kernel_adds_the_residual_then_applies_the_epilogue(case, rows, epilogue):
    weight, block, _ = case
    x, bias, residual = torch.randn(rows, weight.shape[1]), torch.randn(weight.shape[0]), torch.randn(
        rows, weight.shape[0])
    y = run_emulated(weight, bias, x, block, epilogue, residual)
    pre = F.linear(x, weight, bias) + residual
    expected = TORCH_EPILOGUES[epilogue](pre)
    # The activations are 1-Lipschitz (GELU/SiLU slopes stay below 1.13) and add a few ulps of their own.
    bound = 1.13 * (linear_error_bound(x, weight) + torch.finfo(torch.float32).eps
                    * (pre.abs() + residual.abs() + 1)) + 8 * torch.finfo(torch.float32).eps * (expected.abs() + 1)
    assert ((y - expected).abs() <= bound).all()


@needs_nvcc
@pytest.mark.parametrize("arch", CI_ARCHS)
@pytest.mark.parametrize("block,epilogue", [((32, 1), "none"), ((16, 16), "relu"), ((32, 32), "gelu")])
def test_cuda_source_compiles_with_nvcc(arch, block, epilogue):
    source = cuda_source(spec_for(3072, 768, block, epilogue))
    assert "__global__" in source and "__shared__" in source
    cubin = compile_binary(source, arch, "cubin")
    assert len(cubin) > 1000
    ptx = compile_binary(source, arch, "ptx")
    assert b".entry" in ptx


@needs_nvcc
@pytest.mark.parametrize("block", [(32, 32), (16, 16), (32, 1)])
def test_cuda_inner_loop_reads_shared_memory_as_vectors_and_keeps_its_tile_in_registers(block):
    # What makes the kernel compute-bound: 2 four-wide shared loads per 16 multiply-adds, no spills.
    ptx = compile_binary(cuda_source(spec_for(3072, 768, block)), "sm_90", "ptx").decode()
    assert ptx.count("ld.shared.v4.f32") >= 8 and len(re.findall(r"fma\.rn(\.ftz)?\.f32", ptx)) >= 64
    assert "ld.local" not in ptx and "st.local" not in ptx


def test_launch_dims_cover_the_output():
    spec = spec_for(100, 64, (32, 1))
    grid, block = bsr_linear_cuda.launch_dims(spec, rows=70)
    geo = bsr_linear_cuda.geometry(spec)
    assert grid[0] * 32 >= 100 and grid[1] * geo.tile >= 70
    assert block == (geo.threads_x, geo.threads_y, 1) and geo.threads_x * geo.cols == 32


def test_blocks_too_large_for_shared_memory_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="shared memory"):
        bsr_linear_cuda.geometry(spec_for(4096, 4096, (64, 128)))
    with pytest.raises(ValueError, match="cannot stage"):
        bsr_linear_cuda.geometry(spec_for(4096, 4096, (65, 72)))


def pruned_mlp():
    model = nn.Sequential(nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, 64)).eval()
    prune.prune_linears(model, (32, 32), 0.2)
    return model


def test_sparsify_graph_for_cuda_plans_gpu_kernels_and_refuses_cpu_inputs():
    fast = passes.sparsify_graph(fx.symbolic_trace(pruned_mlp()), target="cuda")
    layers = list(fast.sparsepass_report)
    assert all(layer.kernel.startswith("bsr 32x32") for layer in layers)
    assert all("(cuda)" in layer.reason for layer in layers)
    with pytest.raises(SparsifyError, match="built for cuda"):
        fast(torch.randn(4, 128))


@needs_gpu
def test_sparsified_model_runs_on_the_gpu():
    model = pruned_mlp()
    x = torch.randn(64, 128)
    expected = model(x)
    fast = passes.sparsify_graph(fx.symbolic_trace(model), target="cuda").cuda()
    actual = fast(x.cuda()).cpu()
    assert ((actual - expected).abs() <= 1e-4 * (expected.abs() + 1)).all()


def test_gpu_runner_can_bind_every_kernel_parameter():
    """benchmarks/gpu/run_cupy.py binds parameters by name: arrays *_ptr, M, elem_offset*."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu" / "pack.py"
    module_spec = importlib.util.spec_from_file_location("gpu_pack", path)
    pack = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(pack)
    name, params = pack.kernel_signature(cuda_source(spec_for(768, 3072, (32, 32))))
    assert name.endswith("_kernel")
    arrays = {p[:-4] for p in params if p.endswith("_ptr")}
    required = {"X", "Y", "data", "indices", "indptr", "bias"}
    assert required <= arrays <= required | {"R"}  # R (the residual) only when the spec has one
    assert all(p.endswith("_ptr") or p == "M" or p.startswith("elem_offset") for p in params)


@pytest.mark.parametrize("block", [(32, 32), (16, 16), (32, 1), (64, 2), (18, 3)])
def test_launch_dims_match_the_thread_block_tvm_generated(block):
    """run_cupy.py launches with launch_dims; TVM's source declares its thread block's size."""
    spec = spec_for(768, 3072, block)
    bounds = re.search(r"__launch_bounds__\((\d+)\)", cuda_source(spec))
    _, threads = bsr_linear_cuda.launch_dims(spec, rows=4096)
    assert bounds is not None and int(bounds.group(1)) == threads[0] * threads[1] * threads[2]
