"""The CUDA pattern conv: its logic checked on the CPU (emulated), its source compiled by nvcc."""

import pytest
import torch
import torch.nn.functional as F
import tvm
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsepass.codegen import pattern_conv_cuda
from sparsepass.codegen.cuda_compile import CI_ARCHS, compile_binary, cuda_source, nvcc_available
from sparsepass.codegen.pattern_conv_cpu import ConvSpec
from sparsepass.codegen.pattern_format import max_taps, to_pattern_csr
from sparsepass.codegen.target import canonical_target, tvm_target
from sparsepass.testing import gamma
from sparsepass.testing import strategies as sps


def spec_for(weight, height, width, stride, padding, target, epilogue="none", residual=False):
    return ConvSpec.make(in_channels=weight.shape[1], out_channels=weight.shape[0], height=height,
                         width=width, stride=stride, padding=padding, taps=max_taps(weight),
                         epilogue=epilogue, residual=residual, target=target)


@settings(max_examples=12)
@given(mask=sps.pattern_masks(max_channels=10), height=st.integers(3, 40), width=st.integers(3, 40),
       stride=st.sampled_from([1, 2]), padding=st.sampled_from([0, 1]), relu=st.booleans(),
       seed=st.integers(0, 99))
def test_emulated_cuda_pattern_conv_equals_pytorch(mask, height, width, stride, padding, relu, seed):
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(mask.shape, generator=generator) * torch.from_numpy(mask)
    bias = torch.randn(mask.shape[0], generator=generator)
    spec = spec_for(weight.numpy(), height, width, stride, padding, canonical_target("cuda"),
                    "relu" if relu else "none")
    func = pattern_conv_cuda.generate_emulated(spec).with_attr("global_symbol", "emulated")
    kernel = tvm.compile(tvm.IRModule({"emulated": func}), target=tvm_target(canonical_target())).mod["emulated"]
    packed = to_pattern_csr(weight.numpy(), pattern_conv_cuda.tap_index, spec.taps, bias.numpy())
    x = torch.randn(1, mask.shape[1], height, width, generator=generator)
    expected = F.conv2d(x, weight, bias, stride=stride, padding=padding)
    expected = F.relu(expected) if relu else expected
    y = torch.empty(expected.shape)
    kernel(x, *[torch.from_numpy(getattr(packed, f)) for f in ("offsets", "weights", "cols", "ranges", "bias")],
           torch.zeros(1), y)
    # Two-implementation rounding bound of the conv (gamma over its C*9 products) plus the bias add.
    magnitude = F.conv2d(x.abs(), weight.abs(), bias.abs(), stride=stride, padding=padding).double()
    bound = 2 * gamma(mask.shape[1] * 9 + 1) * magnitude + torch.finfo(torch.float32).tiny
    assert ((y.double() - expected.double()).abs() <= bound).all()


@pytest.mark.skipif(not nvcc_available(), reason="nvcc is not installed on this machine")
@pytest.mark.parametrize("arch", CI_ARCHS)
def test_cuda_pattern_conv_compiles_with_nvcc(arch):
    weight = torch.randn(64, 64, 3, 3) * torch.from_numpy(sps.pattern_mask(64, 64, 4, 8, 0.5, 0))
    spec = spec_for(weight.numpy(), 56, 56, 1, 1, canonical_target("cuda"), "relu", residual=True)
    assert len(compile_binary(cuda_source(spec), arch)) > 1000


@pytest.mark.skipif(not nvcc_available(), reason="nvcc is not installed on this machine")
def test_pattern_pruned_block_builds_for_cuda_through_relax(tmp_path):
    import torch.nn as nn

    from sparsepass import frontends, prune
    from sparsepass.codegen.cuda_compile import module_cuda_source
    from sparsepass.passes import relax as sp

    model = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU()).eval()
    prune.pattern_prune(model, taps=4, patterns=4, connectivity=0.5)
    mod = frontends.to_relax(model, (torch.randn(1, 16, 14, 14),))
    target = canonical_target("cuda")
    rewritten = tvm.transform.Sequential([sp.FoldBatchNorm(), sp.SparsifyConv2d(target)])(mod)
    assert sp.report(rewritten)[0].kernel == "pattern conv +relu"
    executable = tvm.compile(mod, target=tvm_target(target), relax_pipeline=sp.pipeline(target))
    executable.export_library(str(tmp_path / "conv_cuda.so"))
    assert len(compile_binary(module_cuda_source(executable.mod), "sm_90")) > 1000
