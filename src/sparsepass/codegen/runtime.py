"""The thread count of sparsepass's CPU kernels, kept in step with PyTorch's.

Kernels called from PyTorch run their parallel loops on PyTorch's OpenMP threads
(``openmp_launcher``); this module also sizes TVM's own pool, which runs whole
Relax builds and runs the kernels where that launcher is unavailable.

TVM sizes its pool once, from TVM_NUM_THREADS, at the first parallel launch
(on these machines it otherwise starts with one thread). We default the
variable to every core before TVM is used, then follow
``torch.get_num_threads()`` at each call, so ``torch.set_num_threads(1)``
makes sparsepass kernels single-threaded too.

TVM's workers spin while idle (TVM_THREAD_POOL_SPIN_COUNT, 300000 by default),
which suits Relax builds: a BERT layer on two threads ran in 1.9-2.2 ms with
spinning workers, 3.0-4.2 ms with sleeping ones (slower than one thread, since
waking a sleeping thread takes 50 us to milliseconds on this project's VM). But
when PyTorch's threads and TVM's pool both spin, each steals the cores the other
computes on (a BERT layer on two threads ran 5x slower than on one). So when
kernels called from PyTorch must run on TVM's pool, its workers are set to sleep
at once (TVM_THREAD_POOL_SPIN_COUNT=0, unless the variable is set).
"""

from __future__ import annotations

import os

os.environ.setdefault("TVM_NUM_THREADS", str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()))

from sparsepass.codegen import openmp_launcher  # noqa: E402
from sparsepass.codegen.tvm_api import tvm  # noqa: E402  (after the env default)

#: TVM's variable for how long its idle workers spin before they sleep.
SPIN_COUNT_ENV = "TVM_THREAD_POOL_SPIN_COUNT"
#: TVM's ThreadGroup affinity mode "big cores", the mode TVM itself configures with.
_AFFINITY_BIG = 1
_configured: list = [None]  # (thread count, OpenMP launcher in use) last applied


def set_num_threads(count: int) -> None:
    """Run sparsepass kernels called from PyTorch on ``count`` threads."""
    state = (int(count), openmp_launcher.in_use())
    if state != _configured[0]:
        openmp_launcher.set_num_threads(count)
        if not state[1]:  # TVM's pool runs them; sized only then, so it starts no idle workers
            os.environ.setdefault(SPIN_COUNT_ENV, "0")  # beside PyTorch's threads: sleep when idle
            set_tvm_pool_threads(count)
        _configured[0] = state


def set_tvm_pool_threads(count: int) -> None:
    """Size TVM's own pool (at most TVM_NUM_THREADS), which runs Relax builds."""
    tvm.get_global_func("runtime.config_threadpool")(_AFFINITY_BIG, int(count))
