"""Kernel generation: TIR PrimFuncs specialised to a sparsity structure, compiled and cached.

Nothing here imports torch.fx or Relax: a generator sees only a KernelSpec.
"""
