"""The one exception sparsepass raises for bad input, always naming the layer and the reason."""

from __future__ import annotations


class SparsifyError(ValueError):
    """A model or layer that sparsepass cannot rewrite without risking a wrong answer.

    The message always starts with the layer (or op) it concerns, so that a user
    with a hundred layers knows where to look: ``layer encoder.0.ffn: weight is
    not a constant``.
    """

    def __init__(self, layer: str | None, reason: str):
        self.layer = layer
        self.reason = reason
        super().__init__(f"layer {layer}: {reason}" if layer else reason)
