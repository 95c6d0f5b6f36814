"""``python -m sparsepass.testing check MODULE:FACTORY``: the equivalence check for any CI.

FACTORY is a function (in an importable module, or ``path/to/file.py``) that
returns ``(model, example_inputs)``. The command sparsifies the model the way
users do (trace, then sparsify_graph, or the Relax pipeline with ``--path
relax``), prints the per-layer report, checks the result against the dense
model with `assert_equivalent`, and exits 1 with the failure report when they
differ (2 when the factory or the model cannot be used).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from pathlib import Path


def load_factory(spec: str):
    """The callable named by ``module.path:function`` or ``file.py:function``."""
    target, _, name = spec.rpartition(":")
    if not target or not name:
        raise ValueError(f"expected MODULE:FUNCTION or FILE.py:FUNCTION, got {spec!r}")
    if target.endswith(".py"):
        path = Path(target)
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        if module_spec is None or not path.exists():
            raise ValueError(f"no such file: {target}")
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    return getattr(module, name)


def _shapes(args: tuple) -> tuple:
    return tuple(tuple(a.shape) if hasattr(a, "shape") else None for a in args)


def _candidate(model, inputs, path: str):
    """The sparsified model and its report; captured with dynamic shapes when the input sets
    differ in shape (a graph torch.export captured runs only at the shapes it saw)."""
    from sparsepass import frontends

    dynamic = "auto" if len({_shapes(i) for i in inputs}) > 1 else None
    if path == "fx":
        from sparsepass import passes

        fast = passes.sparsify_graph(frontends.trace(model, inputs[0], dynamic_shapes=dynamic),
                                     example_inputs=inputs[0])
        return fast, fast.sparsepass_report
    import tvm

    from sparsepass.codegen.target import canonical_target, tvm_target
    from sparsepass.passes import relax as sp

    mod = frontends.to_relax(model, inputs[0], dynamic_shapes=dynamic)
    target = tvm_target(canonical_target())
    with target:
        report = sp.report(tvm.transform.Sequential(sp.sparsepass_passes())(mod))
    return tvm.compile(mod, target=target, relax_pipeline=sp.pipeline()), report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sparsepass.testing")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="sparsify a model and check it against the dense one")
    check.add_argument("factory", help="MODULE:FUNCTION or FILE.py:FUNCTION returning (model, inputs)")
    check.add_argument("--path", choices=["fx", "relax"], default="fx")
    check.add_argument("--rtol", type=float)
    check.add_argument("--atol", type=float)
    args = parser.parse_args(argv)

    from sparsepass.testing.equivalence import EquivalenceError, assert_equivalent

    try:
        model, inputs = load_factory(args.factory)()
        inputs = [tuple(inputs)] if not isinstance(inputs, list) else [
            tuple(i) if isinstance(i, (tuple, list)) else (i,) for i in inputs]
        model.eval()
        candidate, report = _candidate(model, inputs, args.path)
    except Exception as err:
        print(f"sparsepass check: cannot use {args.factory}: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    print(report)
    try:
        assert_equivalent(model, candidate, inputs, rtol=args.rtol, atol=args.atol)
    except (EquivalenceError, ValueError) as err:
        print(f"\nFAILED: {err}", file=sys.stderr)
        return 1
    print(f"\nEQUIVALENT on {len(inputs)} input(s) ({args.path} path)")
    return 0
