"""Front ends: from a user's model to an IR that sparsepass passes rewrite."""

from sparsepass.frontends.trace import trace

__all__ = ["trace"]
