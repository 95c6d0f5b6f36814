"""Front ends: from a user's model to an IR that sparsepass passes rewrite."""

from sparsepass.frontends.relax import to_relax
from sparsepass.frontends.trace import trace

__all__ = ["to_relax", "trace"]
