"""The one place that imports TVM's moving namespaces.

TVM renamed TIR to ``tirx`` and moved schedules to ``s_tir`` in 0.27; when the
next rename comes, only this file changes. Everything else in sparsepass
imports TVM names from here.
"""

from __future__ import annotations

import tvm
from tvm import tirx
from tvm.script import tirx as T
from tvm_ffi import structural_equal

__all__ = ["tvm", "tirx", "T", "compile_module", "load_module", "structural_equal"]


def compile_module(funcs: dict, target: "tvm.target.Target") -> "tvm.runtime.Executable":
    """Compile PrimFuncs (name -> PrimFunc) for ``target`` into one executable."""
    return tvm.compile(tvm.IRModule(funcs), target=target)


def load_module(path: str) -> "tvm.runtime.Module":
    """Load a shared library written by ``Executable.export_library``."""
    return tvm.runtime.load_module(path)
