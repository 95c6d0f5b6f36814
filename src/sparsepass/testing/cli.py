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


def _candidate(model, inputs, path: str):
    if path == "fx":
        from sparsepass import frontends, passes

        fast = passes.sparsify_graph(frontends.trace(model, inputs[0]), example_inputs=inputs[0])
        return fast, fast.sparsepass_report
    import tvm

    from sparsepass import frontends
    from sparsepass.codegen.target import canonical_target, tvm_target
    from sparsepass.passes import relax as sp

    mod = frontends.to_relax(model, inputs[0])
    lowered_report = sp.report(sp.SparsifyLinear()(mod))
    executable = tvm.compile(mod, target=tvm_target(canonical_target()), relax_pipeline=sp.pipeline())
    return executable, lowered_report


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
