"""Runs the parallel loops of sparsepass's CPU kernels on PyTorch's OpenMP threads.

Why: a graph that mixes PyTorch ops and sparsepass kernels would otherwise run on
two thread pools sharing the cores. Whichever pool is idle either spins (and
takes a core from the other) or sleeps (and each launch waits to wake it: 50 us
at the median and 0.2-2 ms at the tail on this project's VM). Measured here on
two threads, ResNet-18 (pattern convs) ran 1.2x over PyTorch dense on TVM's pool
and 1.4-1.6x on PyTorch's threads; a BERT layer (32x1 at 10%) 3.0-7.7x against
8.9-11.8x. One pool is what PyTorch's own ops use, so its threads are already
awake when a kernel follows a PyTorch op.

How: a CPU library TVM builds calls each parallel loop through a function pointer
it exports (``__TVMBackendParallelLaunch``), which TVM's loader fills with its
pool's launcher. ``attach`` points it at ``openmp_launcher.c``, compiled once
(into the kernel cache) with the compiler TVM links kernels with, which forks the
loop on the OpenMP runtime PyTorch loaded. Where that is not possible (no
compiler, an unwritable cache, an OpenMP runtime without GNU entry points, or
``SPARSEPASS_THREAD_POOL=tvm``), kernels keep TVM's pool and
``unavailable_reason()`` says why.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import threading
from pathlib import Path

from sparsepass.codegen import cache
from sparsepass.codegen.tvm_api import tvm

log = logging.getLogger(__name__)

#: Environment variable choosing the pool: "openmp" (default) or "tvm".
POOL_ENV = "SPARSEPASS_THREAD_POOL"
_SOURCE = Path(__file__).with_name("openmp_launcher.c")
_HOOK = "__TVMBackendParallelLaunch"
#: A library that calls TVM's barrier needs TVM's pool (our group env has no barrier).
_BARRIER = b"TVMBackendParallelBarrier"
_OPENMP_NAMES = ("libgomp", "libomp", "libiomp5")

_lock = threading.Lock()
#: Every hook attached so far with TVM's launcher it replaced, for `use_openmp`.
_attached: list[tuple[ctypes.c_void_p, int]] = []
_state = {"openmp": True, "threads": 1}


class _Unavailable(Exception):
    """Why kernels must keep TVM's pool."""


def _loaded_openmp_runtime() -> ctypes.CDLL:
    """The OpenMP runtime already in this process (PyTorch's), never a second one."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "/" in line}
    except OSError as err:
        raise _Unavailable(f"cannot list the loaded libraries ({err})") from None
    for path in sorted(paths):
        if any(os.path.basename(path).startswith(name) for name in _OPENMP_NAMES):
            try:
                lib = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
            except OSError:  # mapped but not loaded as a library
                continue
            if all(hasattr(lib, name) for name in ("GOMP_parallel", "omp_get_thread_num",
                                                   "omp_get_num_threads")):
                return lib
    raise _Unavailable("PyTorch's OpenMP runtime (GOMP_parallel) is not loaded in this process")


def _build_launcher() -> Path:
    """The compiled launcher, from the kernel cache or built now."""
    cc = tvm.support.cc
    source = _SOURCE.read_bytes()
    compiler = cc.get_cc() or "c++"
    key = hashlib.sha256(source + compiler.encode()).hexdigest()[:16]
    root = cache.cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    lib = root / f"openmp-launcher-{key}.so"
    if not lib.exists():
        try:
            cache.atomic_write(lib, lambda tmp: cc.create_shared(tmp, [str(_SOURCE)], ["-O2"],
                                                                 cc=compiler))
        except Exception as err:
            raise _Unavailable(f"the launcher did not compile with {compiler} ({err})") from None
    return lib


@functools.cache
def _launcher() -> tuple[int, ctypes.CDLL] | str:
    """(address of the launch function, its library), or why there is none."""
    if os.environ.get(POOL_ENV, "openmp").lower() == "tvm":
        return f"{POOL_ENV}=tvm"
    try:
        openmp = _loaded_openmp_runtime()
        lib = ctypes.CDLL(str(_build_launcher()))
    except (_Unavailable, OSError) as err:  # OSError: an unwritable cache, a library that won't load
        log.warning("sparsepass kernels use TVM's thread pool: %s", err)
        return str(err)

    def address(library: ctypes.CDLL, name: str) -> ctypes.c_void_p:
        return ctypes.c_void_p(ctypes.cast(getattr(library, name), ctypes.c_void_p).value)

    lib.sparsepass_launcher_init(address(openmp, "GOMP_parallel"),
                                 address(openmp, "omp_get_thread_num"),
                                 address(openmp, "omp_get_num_threads"))
    lib.sparsepass_launcher_set_threads(ctypes.c_int(_state["threads"]))
    return address(lib, "sparsepass_parallel_launch").value, lib


def unavailable_reason() -> str | None:
    """Why kernels run on TVM's pool, or None when they run on PyTorch's OpenMP threads."""
    launcher = _launcher()
    return launcher if isinstance(launcher, str) else None


def in_use() -> bool:
    """Whether attached kernels run on the OpenMP launcher now (see `use_openmp`)."""
    return _state["openmp"] and unavailable_reason() is None


def set_num_threads(count: int) -> None:
    """The number of OpenMP threads each kernel's parallel loop forks."""
    _state["threads"] = int(count)
    launcher = _launcher()
    if not isinstance(launcher, str):
        launcher[1].sparsepass_launcher_set_threads(ctypes.c_int(int(count)))


def attach(library: str) -> bool:
    """Point a loaded kernel library's parallel loops at the OpenMP launcher.

    ``library`` is the path TVM loaded it from (the handle is looked up, never
    loaded a second time). Returns False when the library keeps TVM's pool.
    """
    launcher = _launcher()
    if isinstance(launcher, str) or _BARRIER in Path(library).read_bytes():
        return False
    try:
        handle = ctypes.CDLL(library, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
        hook = ctypes.c_void_p.in_dll(handle, _HOOK)
    except (OSError, ValueError):  # not loaded, or a library without parallel loops
        return False
    with _lock:
        if hook.value != launcher[0]:
            _attached.append((hook, hook.value))
            if _state["openmp"]:
                hook.value = launcher[0]
    return True


def use_openmp(enabled: bool) -> None:
    """Switch every attached kernel between the OpenMP launcher and TVM's pool (for A/B runs)."""
    launcher = _launcher()
    with _lock:
        _state["openmp"] = bool(enabled)
        for hook, tvm_launcher in _attached:
            hook.value = launcher[0] if enabled and not isinstance(launcher, str) else tvm_launcher
