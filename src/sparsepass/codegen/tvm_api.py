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


def compile_module(funcs: dict, target: "tvm.target.Target", pass_config: dict | None = None
                   ) -> "tvm.runtime.Executable":
    """Compile PrimFuncs (name -> PrimFunc) for ``target`` into one executable, with
    ``pass_config`` added to the current PassContext's configuration."""
    if not pass_config:
        return tvm.compile(tvm.IRModule(funcs), target=target)
    current = tvm.transform.PassContext.current()
    with tvm.transform.PassContext(opt_level=current.opt_level, config={**current.config, **pass_config},
                                   required_pass=current.required_pass, disabled_pass=current.disabled_pass,
                                   instruments=current.instruments):
        return tvm.compile(tvm.IRModule(funcs), target=target)


def load_module(path: str) -> "tvm.runtime.Module":
    """Load a shared library written by ``Executable.export_library``."""
    return tvm.runtime.load_module(path)
