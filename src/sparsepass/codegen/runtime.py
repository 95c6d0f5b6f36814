"""The thread count of sparsepass's CPU kernels, kept in step with PyTorch's.

Kernels called from PyTorch run their parallel loops on PyTorch's OpenMP threads
(``openmp_launcher``); this module also sizes TVM's own pool, which runs them
where that launcher is unavailable and runs whole Relax builds.

TVM sizes its pool once, from TVM_NUM_THREADS, at the first parallel launch
(on these machines it otherwise starts with one thread). We default the
variable to every core before TVM is used, then follow
``torch.get_num_threads()`` at each call, so ``torch.set_num_threads(1)``
makes sparsepass kernels single-threaded too.

When TVM's pool and PyTorch's both spin while idle, each steals the cores the
other is computing on (a BERT layer on two threads ran 5x slower than on one).
So TVM's workers default to sleeping at once (TVM_THREAD_POOL_SPIN_COUNT=0).
"""

from __future__ import annotations

import os

os.environ.setdefault("TVM_THREAD_POOL_SPIN_COUNT", "0")
os.environ.setdefault("TVM_NUM_THREADS", str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()))

from sparsepass.codegen import openmp_launcher  # noqa: E402
from sparsepass.codegen.tvm_api import tvm  # noqa: E402  (after the env default)

#: TVM's ThreadGroup affinity mode "big cores", the mode TVM itself configures with.
_AFFINITY_BIG = 1
_configured: list = [None]  # (thread count, OpenMP launcher in use) last applied


def set_num_threads(count: int) -> None:
    """Run sparsepass kernels called from PyTorch on ``count`` threads."""
    state = (int(count), openmp_launcher.in_use())
    if state != _configured[0]:
        openmp_launcher.set_num_threads(count)
        if not state[1]:  # TVM's pool runs them; sized only then, so it starts no idle workers
            set_tvm_pool_threads(count)
        _configured[0] = state


def set_tvm_pool_threads(count: int) -> None:
    """Size TVM's own pool (at most TVM_NUM_THREADS), which runs Relax builds."""
    tvm.get_global_func("runtime.config_threadpool")(_AFFINITY_BIG, int(count))
