"""The per-layer report a pass attaches to what it returns.

Every candidate layer appears, rewritten or not, with the reason for the
decision, so nothing is skipped silently. ``str(report)`` renders a table;
``report.rewritten`` counts the rewrites, which tests assert on.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class LayerReport:
    """One layer: what it is, what sparsity it has, and what was done with it."""

    name: str
    op: str
    shape: tuple[int, ...]
    structure: str
    density: float | None
    kernel: str  # "dense", or the chosen kernel, e.g. "bsr 32x1 rows"
    reason: str
    estimated_speedup: float | None = None

    @property
    def rewritten(self) -> bool:
        return self.kernel != "dense"


@dataclasses.dataclass(frozen=True)
class Report:
    """The layers a pass looked at, in graph order."""

    layers: tuple[LayerReport, ...] = ()
    compacted: tuple = ()  #: (layer name, weight shape before, after) of channel compaction
    notes: tuple[str, ...] = ()  #: what a pass could not do, in words
    #: Dense ops run on sparsepass kernels, or left to PyTorch with the reason (max pooling)
    other_ops: tuple[LayerReport, ...] = ()

    def __iter__(self):
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, name_or_index):
        if isinstance(name_or_index, str):
            for layer in self.layers:
                if layer.name == name_or_index:
                    return layer
            raise KeyError(name_or_index)
        return self.layers[name_or_index]

    @property
    def rewritten(self) -> int:
        """How many layers now run a sparse kernel."""
        return sum(layer.rewritten for layer in self.layers)

    def __str__(self) -> str:
        header = ("layer", "op", "shape", "structure", "density", "kernel", "est.", "reason")
        rows = [header] + [
            (
                layer.name,
                layer.op,
                "x".join(map(str, layer.shape)),
                layer.structure,
                "-" if layer.density is None else f"{layer.density:.3f}",
                layer.kernel,
                "-" if layer.estimated_speedup is None else f"{layer.estimated_speedup:.1f}x",
                layer.reason,
            )
            for layer in self.layers
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1] for row in rows]
        lines.insert(1, "-" * min(120, len(lines[0])))
        lines.append(f"{self.rewritten} of {len(self.layers)} layers rewritten")
        for op in self.other_ops:
            lines.append(f"{op.op} {op.name}: {op.kernel if op.rewritten else 'PyTorch'} ({op.reason})")
        for name, before, after in self.compacted:
            lines.append(f"compacted {name}: {'x'.join(map(str, before))} -> {'x'.join(map(str, after))}")
        lines.extend(self.notes)
        return "\n".join(lines)
