"""TVM's CPU thread pool, kept in step with PyTorch's thread count.

TVM sizes its pool once, from TVM_NUM_THREADS, at the first parallel launch
(on these machines it otherwise starts with one thread). We default the
variable to every core before TVM is used, then follow
``torch.get_num_threads()`` at each call, so ``torch.set_num_threads(1)``
makes sparsepass kernels single-threaded too.

Two pools share the cores: TVM's and PyTorch's OpenMP. When both spin while
idle, each steals the cores the other is computing on (a BERT layer on two
threads ran 5x slower than on one). So TVM's workers default to sleeping at
once (TVM_THREAD_POOL_SPIN_COUNT=0). PyTorch's OpenMP threads spin too;
``OMP_WAIT_POLICY=passive`` in the environment before Python starts stops
that (it is read when torch loads, so sparsepass cannot set it for you).
"""

from __future__ import annotations

import os

os.environ.setdefault("TVM_THREAD_POOL_SPIN_COUNT", "0")
os.environ.setdefault("TVM_NUM_THREADS", str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()))

from sparsepass.codegen.tvm_api import tvm  # noqa: E402  (after the env default)

#: TVM's ThreadGroup affinity mode "big cores", the mode TVM itself configures with.
_AFFINITY_BIG = 1
_configured: list[int] = [0]


def set_num_threads(count: int) -> None:
    """Run TVM kernels on ``count`` threads (at most TVM_NUM_THREADS)."""
    if count != _configured[0]:
        tvm.get_global_func("runtime.config_threadpool")(_AFFINITY_BIG, int(count))
        _configured[0] = count
