"""The planner refined by measuring: a layer is rewritten only where its kernel wins here.

The cost model's efficiencies were measured on one CPU (plan.CostModel); on
another, PyTorch's dense layers and the sparse kernels do not scale alike. On a
Sapphire Rapids-class VM PyTorch's float32 linear ran 1.3x as fast as on the
Zen 5 the model was fitted on, the 32x1 kernels half as fast, and AMX ran
bfloat16 dense 4.6x faster again: a bfloat16 FFN layer estimated 1.3x faster
than dense ran 0.7x. With ``SparsifyOptions(measure=True)`` each layer the
planner would rewrite is timed both ways on this machine before the graph
changes: PyTorch's dense op followed by what the kernel fuses (the residual
add, the activation: separate passes over the output in PyTorch) against the
kernel, on random input of the shape the example inputs give the layer, in
turns (testing.timing). A layer whose
kernel does not win by ``min_speedup`` stays dense, and the report gives both
times either way.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import torch

from sparsepass.codegen.target import is_host
from sparsepass.passes.plan import Decision
from sparsepass.testing.epilogues import TORCH_EPILOGUES
from sparsepass.testing.timing import interleaved_median_ms

#: Timed calls of each side, in rounds of BATCH after one untimed call a round: at least
#: MIN_CALLS, more for fast layers, up to about BUDGET_S of timing per side (a 30 us conv timed
#: 10 times moved by 20% between runs). A BERT-base encoder's 72 layers take a few seconds.
MIN_CALLS, MAX_CALLS, BATCH = 10, 300, 5
BUDGET_S = 0.01


def random_like(shape, dtype: torch.dtype, device: str = "cpu") -> torch.Tensor:
    """Standard normal values: what the kernels' speed does not depend on, kept away from
    subnormal numbers, which would slow either side."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn(tuple(shape), generator=generator).to(dtype=dtype, device=device)


def _calls(*fns) -> int:
    """Timed calls per side: MIN_CALLS, or as many as fit BUDGET_S for the slower side."""
    slowest = 0.0
    for fn in fns:
        fn()  # the first call compiles or loads the kernel
        start = time.perf_counter()
        fn()
        slowest = max(slowest, time.perf_counter() - start)
    return min(MAX_CALLS, max(MIN_CALLS, int(BUDGET_S / max(slowest, 1e-9))))


def unmeasurable_reason(shape, target: dict) -> str | None:
    """Why a layer with input ``shape`` (None: unknown) cannot be timed for ``target``, or None."""
    if not is_host(target):
        return "the target is not this machine's CPU"
    if shape is None or not all(isinstance(d, int) for d in shape):
        return "input shape unknown (pass example_inputs)"
    return None


def confirm(decision: Decision, dense: Callable[[], torch.Tensor], residual: torch.Tensor | None,
            sparse: Callable[[], object], min_speedup: float) -> Decision:
    """``decision`` (a rewrite) kept if ``sparse()`` beats ``dense()`` followed by the kernel's
    fused residual add and epilogue by ``min_speedup`` when timed here, else turned into "stay
    dense"; either way the reason gives both times."""
    act = TORCH_EPILOGUES[decision.kernel.epilogue]
    unfused = (lambda: act(dense())) if residual is None else (lambda: act(dense() + residual))
    with torch.no_grad():
        dense_ms, sparse_ms = interleaved_median_ms([unfused, sparse], _calls(unfused, sparse), BATCH)
    speedup = dense_ms / sparse_ms
    measured = f"measured {speedup:.2f}x the speed of dense ({sparse_ms:.3f} vs {dense_ms:.3f} ms)"
    if speedup < min_speedup:
        return Decision(None, f"{measured}; a rewrite needs {min_speedup:.2f}x (estimated "
                              f"{decision.estimated_speedup:.2f}x)", decision.dense_cost, decision.sparse_cost)
    return dataclasses.replace(decision, reason=f"{decision.reason}; {measured}")
