"""Targets as canonical dicts, so that a kernel's cache key never depends on spelling.

TVM 0.27 rejects CLI target strings and gives generic (4x slower) x86 code for
``{"kind": "llvm"}`` alone, so the host CPU is always spelled out with its
``mcpu`` and an ``mtriple`` that accepts it.
"""

from __future__ import annotations

import functools
import json
import platform
from pathlib import Path
from typing import Any

from sparsepass.codegen.tvm_api import tvm

#: The CUDA architecture assumed when a user asks for "cuda" without one.
DEFAULT_CUDA_ARCH = "sm_90"


@functools.cache
def host_target() -> dict:
    """The host CPU as an LLVM target dict with its real micro-architecture."""
    cpu = str(tvm.target.codegen.llvm_get_system_cpu())
    target = {"kind": "llvm", "mcpu": cpu}
    if platform.machine() in ("x86_64", "AMD64"):
        # The reported system triple (x86_64-conda-linux-gnu) rejects mcpu.
        target["mtriple"] = "x86_64-linux-gnu"
    return target


def canonical_target(target: Any = None) -> dict:
    """Normalise None / "llvm" / "cpu" / "cuda" / a dict / a tvm Target to a plain dict.

    ``None``, ``"llvm"`` and ``"cpu"`` mean the host CPU. ``"cuda"`` means an
    NVIDIA GPU of architecture DEFAULT_CUDA_ARCH with the host as its host.
    """
    if target is None or target in ("llvm", "cpu"):
        return dict(host_target())
    if target == "cuda":
        return {"kind": "cuda", "arch": DEFAULT_CUDA_ARCH, "host": host_target()}
    if isinstance(target, tvm.target.Target):
        target = {k: v for k, v in target.export().items() if k not in ("tag", "keys")}
    if not isinstance(target, dict) or "kind" not in target:
        raise ValueError(
            f"target {target!r} is not understood: pass None (the host CPU), 'llvm', "
            "'cuda', or a TVM target dict such as {'kind': 'llvm', 'mcpu': 'znver4'}"
        )
    if target["kind"] == "llvm" and "mcpu" not in target:
        return {**host_target(), **target}
    return dict(target)


def target_key(target: dict) -> str:
    """A stable string for a canonical target (sorted JSON)."""
    return json.dumps(target, sort_keys=True, default=str)


def tvm_target(target: dict) -> "tvm.target.Target":
    """The TVM Target object for a canonical target dict."""
    return tvm.target.Target(target)


@functools.cache
def _vector_registers(key: str) -> tuple[int, int]:
    target = tvm_target(json.loads(key))
    triple = str(target.attrs.get("mtriple", "") or platform.machine())
    if triple.startswith(("x86_64", "i686", "AMD64")):
        has = tvm.target.codegen.target_has_features
        if has("avx512f", target):
            return 16, 32
        return (8, 16) if has("avx", target) else (4, 16)
    if triple.startswith(("aarch64", "arm")):
        return 4, 32
    return 16, 32  # unknown: the tiles measured on AVX-512


def vector_registers(target: dict) -> tuple[int, int]:
    """(float32 lanes per vector register, vector registers) of a CPU target: AVX-512 16 and 32,
    AVX2 8 and 16, NEON 4 and 32. Register tiles are sized by them: a tile tuned for AVX-512
    spills on AVX2 (the BERT FFN's 32x1 kernel ran 1.7x slower on a Zen 2 with it)."""
    return _vector_registers(target_key(target))


def is_host(target: dict) -> bool:
    """Whether a canonical target is this machine's CPU (what can be timed here)."""
    return target_key(target) == target_key(host_target())


def is_cuda(target: dict) -> bool:
    return target.get("kind") == "cuda"


#: CPU features that speed up PyTorch's (oneDNN's) dense half-precision matmuls and convs, and
#: the names Linux's /proc/cpuinfo gives them.
HALF_PRECISION_FEATURES = {"amx-bf16": "amx_bf16", "amx-fp16": "amx_fp16", "avx512bf16": "avx512_bf16",
                           "avx512fp16": "avx512_fp16"}


@functools.cache
def _host_half_precision_features() -> frozenset[str]:
    # The host's own flags, on which oneDNN dispatches. LLVM's name for the host can be an older
    # model than the host is under a VM ("rocketlake" for a host with AMX here).
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:  # not Linux: PyTorch's probes (they cover all but AVX-512 FP16)
        import torch

        probes = {"amx-bf16": "_is_amx_tile_supported", "amx-fp16": "_is_amx_fp16_supported",
                  "avx512bf16": "_is_avx512_bf16_supported"}
        return frozenset(f for f, probe in probes.items() if getattr(torch.cpu, probe, lambda: False)())
    return frozenset(f for f, flag in HALF_PRECISION_FEATURES.items() if flag in flags)


def half_precision_features(target: dict) -> frozenset[str]:
    """Which of HALF_PRECISION_FEATURES a CPU target has: for the host, those PyTorch finds at run
    time; for another CPU, those LLVM knows its ``mcpu`` by."""
    if is_cuda(target):
        return frozenset()
    if is_host(target):
        return _host_half_precision_features()
    has = tvm.target.codegen.target_has_features
    return frozenset(f for f in HALF_PRECISION_FEATURES if has(f, tvm_target(target)))
