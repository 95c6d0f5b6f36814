"""Kernels called from PyTorch run on PyTorch's OpenMP threads, give the same results
on either pool, and fall back to TVM's pool with a reason when the launcher is unavailable."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.fx as fx

from sparsepass import passes, prune
from sparsepass.codegen import openmp_launcher
from sparsepass.testing import assert_equivalent


def _sparse_model(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.ReLU(), torch.nn.Linear(512, 128))
    prune.prune_linears(model.eval(), block=(32, 1), density=0.2)
    x = torch.randn(48, 256)
    return model, x, passes.sparsify_graph(fx.symbolic_trace(model), example_inputs=(x,))


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)
    openmp_launcher.use_openmp(True)


def test_kernels_run_on_the_openmp_launcher_and_match_on_both_pools(two_threads):
    model, x, fast = _sparse_model()
    fast(x)
    assert openmp_launcher.unavailable_reason() is None
    assert openmp_launcher._attached, "no kernel library was attached"
    for openmp in (True, False, True):
        openmp_launcher.use_openmp(openmp)
        assert_equivalent(model, fast, [x])


#: Counts the threads this process starts for its first kernel calls (one and two threads).
_COUNT_THREADS = textwrap.dedent("""
    import json, os, torch, torch.fx as fx
    from sparsepass import passes, prune
    from sparsepass.codegen import openmp_launcher
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 256)).eval()
    prune.prune_linears(model, block=(32, 1), density=0.2)
    x = torch.randn(64, 256)
    fast = passes.sparsify_graph(fx.symbolic_trace(model), example_inputs=(x,))
    torch.set_num_threads(2)
    model(x)                     # PyTorch's OpenMP team exists
    before = len(os.listdir("/proc/self/task"))
    ok = all(torch.allclose(fast(x), model(x), atol=1e-4) for threads in (1, 2)
             if torch.set_num_threads(threads) is None)
    after = len(os.listdir("/proc/self/task"))
    print(json.dumps({"new_threads": after - before, "ok": ok,
                      "reason": openmp_launcher.unavailable_reason()}))
""")


def _count_threads(**env) -> dict:
    run = subprocess.run([sys.executable, "-c", _COUNT_THREADS], capture_output=True, text=True,
                         env={**os.environ, **env}, timeout=300)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads through /proc")
def test_openmp_launcher_starts_no_pool_of_its_own_and_tvm_pool_does():
    shared = _count_threads()
    assert shared == {"new_threads": 0, "ok": True, "reason": None}
    separate = _count_threads(**{openmp_launcher.POOL_ENV: "tvm"})
    assert separate["ok"] and separate["new_threads"] >= 1
    assert separate["reason"] == f"{openmp_launcher.POOL_ENV}=tvm"


def test_a_launcher_that_does_not_compile_leaves_tvm_pool_with_the_reason(tmp_path):
    broken = tmp_path / "broken.c"
    broken.write_text("this is not C\n")
    script = textwrap.dedent(f"""
        import torch
        from sparsepass.codegen import openmp_launcher
        from pathlib import Path
        openmp_launcher._SOURCE = Path({str(broken)!r})
        print(openmp_launcher.unavailable_reason())
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env={**os.environ, "SPARSEPASS_CACHE_DIR": str(tmp_path / "cache")},
                         timeout=300)
    assert run.returncode == 0, run.stderr
    assert "did not compile" in run.stdout
    assert "use TVM's thread pool" in run.stderr


def test_an_unwritable_cache_leaves_tvm_pool_with_the_reason(tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the cache directory should be\n")
    script = "from sparsepass.codegen import openmp_launcher; print(openmp_launcher.unavailable_reason())"
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env={**os.environ, "SPARSEPASS_CACHE_DIR": str(blocker / "cache")}, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "not-a-directory" in run.stdout
