"""CUDA source out of TVM, binaries out of nvcc, without needing a GPU.

TVM 0.27's ``tvm.compile`` for a CUDA target embeds CUDA *source* in the
module (its default compiler, NVRTC, needs the cuda-bindings package these
machines lack). We ask nvcc for cubin/PTX ourselves, inside a target scope as
``tvm.support.nvcc`` requires, so every CI run proves the kernels compile.
"""

from __future__ import annotations

import shutil

from sparsepass.codegen.build import compile_spec
from sparsepass.codegen.tvm_api import tvm

#: Architectures every CI run compiles for: Ampere (A100) and Hopper (H100/H200).
CI_ARCHS = ("sm_80", "sm_90")


def nvcc_available() -> bool:
    return shutil.which("nvcc") is not None


def module_cuda_source(module) -> str:
    """The CUDA source inside a built module (a kernel's or a whole Relax executable's)."""
    pending, sources = [module], []
    while pending:
        current = pending.pop()
        if current.kind == "cuda":
            sources.append(current.inspect_source("cuda"))
        pending.extend(current.imports)
    if not sources:
        raise ValueError("the module holds no CUDA code")
    return "\n".join(sources)


def cuda_source(spec) -> str:
    """The CUDA C source TVM generates for a CUDA-target kernel spec."""
    if spec.target_dict.get("kind") != "cuda":
        raise ValueError(f"spec targets {spec.target_dict.get('kind')!r}, not cuda")
    return module_cuda_source(compile_spec(spec).mod)


def compile_binary(source: str, arch: str, fmt: str = "cubin") -> bytes:
    """Compile CUDA ``source`` with nvcc for ``arch`` (e.g. "sm_90") to cubin or ptx."""
    from tvm.support import nvcc

    with tvm.target.Target({"kind": "cuda", "arch": arch}):
        return bytes(nvcc.compile_cuda(source, target_format=fmt, arch=arch, compiler="nvcc"))
