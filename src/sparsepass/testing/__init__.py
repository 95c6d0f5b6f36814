"""Test machinery for sparsepass and for its users' CI: tolerances and hypothesis strategies."""

from sparsepass.testing.tolerance import assert_linear_close, gamma, linear_error_bound, output_tolerance

__all__ = ["assert_linear_close", "gamma", "linear_error_bound", "output_tolerance"]
