"""From a kernel spec to a callable kernel: generate, compile, cache, load.

A spec is any frozen dataclass with ``op``, ``target_dict`` and ``to_json``
(KernelSpec for BSR linears, MatmulSpec for dense matmuls). Generators are
looked up in a table by (kernel family, target kind), so a new target or
family is one entry here, never a branch in a caller.
"""

from __future__ import annotations

import threading
from typing import Callable

from sparsepass.codegen import (
    bsr_linear_amx,
    bsr_linear_cpu,
    bsr_linear_cuda,
    cache,
    dense_matmul_cpu,
    max_pool_cpu,
    norm_cpu,
    openmp_launcher,
    pattern_conv_cpu,
    pattern_conv_cuda,
)
from sparsepass.codegen.target import tvm_target
from sparsepass.codegen.tvm_api import compile_module, tvm

#: (op, target kind) -> (generator of the PrimFunc, its entry name)
GENERATORS: dict[tuple[str, str], tuple[Callable, str]] = {
    ("bsr_linear", "llvm"): (bsr_linear_cpu.generate, bsr_linear_cpu.ENTRY),
    ("bsr_linear", "cuda"): (bsr_linear_cuda.generate, bsr_linear_cuda.ENTRY),
    ("dense_matmul", "llvm"): (dense_matmul_cpu.generate, dense_matmul_cpu.ENTRY),
    ("row_norm", "llvm"): (norm_cpu.generate, norm_cpu.ENTRY),
    ("max_pool", "llvm"): (max_pool_cpu.generate, max_pool_cpu.ENTRY),
    ("pattern_conv", "llvm"): (pattern_conv_cpu.generate, pattern_conv_cpu.ENTRY),
    ("pattern_conv", "cuda"): (pattern_conv_cuda.generate, pattern_conv_cuda.ENTRY),
}

_loaded: dict = {}  # spec -> compiled function
_lock = threading.Lock()


def _generator(spec) -> tuple[Callable, str]:
    kind = spec.target_dict["kind"]
    try:
        return GENERATORS[(spec.op, kind)]
    except KeyError:
        raise NotImplementedError(f"no {spec.op} kernel generator for target kind {kind!r}") from None


#: Relax's OpPatternKind kOpaque: our kernels are pre-scheduled low-level TIR that
#: FuseOps must not merge with its neighbours (FuseTIR needs block-form TIR).
OP_PATTERN_OPAQUE = 8


def primfunc(spec) -> "tvm.tirx.PrimFunc":
    """The TIR PrimFunc for ``spec`` (for Relax call_tir and for inspection)."""
    generate, _ = _generator(spec)
    return generate(spec).with_attr("op_pattern", OP_PATTERN_OPAQUE)


def _uses_amx(spec) -> bool:
    return getattr(spec, "layout", None) == "amx"


def compile_spec(spec) -> "tvm.runtime.Executable":
    """Compile ``spec`` for its target (no cache)."""
    _, entry = _generator(spec)
    amx = _uses_amx(spec)
    target = bsr_linear_amx.compile_target(spec.target_dict) if amx else spec.target_dict
    return compile_module({entry: primfunc(spec)}, tvm_target(target), bsr_linear_amx.PASS_CONFIG if amx else None)


def get_kernel(spec) -> Callable:
    """The compiled kernel for ``spec``, from memory, the disk cache, or a fresh build."""
    fn = _loaded.get(spec)
    if fn is not None:
        return fn
    if _uses_amx(spec):
        bsr_linear_amx.require_tile_permission()
    with _lock:
        if spec not in _loaded:
            _, entry = _generator(spec)
            module = cache.load_or_build(spec, compile_spec)
            if spec.target_dict["kind"] == "llvm":
                openmp_launcher.attach(str(cache.library_path(spec)))
            _loaded[spec] = module[entry]
        return _loaded[spec]
