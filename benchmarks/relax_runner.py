"""A Relax build timed like a PyTorch model: one call without copies, one that returns torch."""

from __future__ import annotations

import torch
import tvm

from sparsepass.codegen.target import canonical_target, tvm_target
from sparsepass.passes import relax as sp


def relax_runner(executable, x: torch.Tensor):
    """(run, output): ``run()`` calls the VM on a pre-converted ``x``; ``output()`` returns torch."""
    vm = tvm.relax.VirtualMachine(executable, tvm.cpu())
    arg = tvm.runtime.tensor(x.numpy())

    def first(out):
        while not hasattr(out, "numpy"):  # the torch importer wraps outputs in a tuple
            out = out[0]
        return torch.from_numpy(out.numpy())

    return lambda: vm["main"](arg), lambda: first(vm["main"](arg))


def build_with_sparsepass(mod):
    """``mod`` built for the host CPU with sparsepass's Relax pipeline."""
    return tvm.compile(mod, target=tvm_target(canonical_target()), relax_pipeline=sp.pipeline())
