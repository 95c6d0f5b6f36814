"""The Relax passes' report: per-layer entries kept as a JSON module attribute.

A module pass must not keep state on itself, so what it did travels with the
module it returns: ``report(mod)`` reads it back as a `Report`.
"""

from __future__ import annotations

import dataclasses
import json

from sparsepass.passes.report import LayerReport, Report

ATTR = "sparsepass.report"


def report(mod) -> Report:
    """The layers sparsepass Relax passes have reported on ``mod`` (empty if none ran)."""
    attrs = mod.attrs
    if attrs is None or ATTR not in attrs:
        return Report(())
    layers = []
    for entry in json.loads(str(attrs[ATTR])):
        entry["shape"] = tuple(entry["shape"])
        layers.append(LayerReport(**entry))
    return Report(tuple(layers))


def append_report(mod, layers: list[LayerReport]):
    """``mod`` with ``layers`` appended to its report attribute."""
    entries = [dataclasses.asdict(layer) for layer in report(mod).layers + tuple(layers)]
    return mod.with_attr(ATTR, json.dumps(entries))
