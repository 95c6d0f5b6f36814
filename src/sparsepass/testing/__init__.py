"""Test machinery for sparsepass and for its users' CI.

- `assert_equivalent`: a compiled/sparsified model against its dense reference,
  with derived tolerances and a report that names the diverging node;
- tolerances derived from the arithmetic (`gamma`, `linear_error_bound`, ...);
- `float32_matmul_precision`: a reference run under the float32 precision a model was sparsified
  under;
- ``sparsepass.testing.strategies``: hypothesis strategies for pruned weights,
  layers and small graphs (imports hypothesis);
- ``python -m sparsepass.testing check MODULE:FACTORY`` and the pytest fixture
  ``sparsepass_equivalence``.
"""

from sparsepass.passes.precision import float32_matmul_precision
from sparsepass.testing.equivalence import EquivalenceError, assert_equivalent, first_divergence
from sparsepass.testing.tolerance import (
           assert_linear_close,
           gamma,
           half_output_tolerance,
           linear_error_bound,
           output_tolerance,
)

__all__ = ["EquivalenceError", "assert_equivalent", "assert_linear_close", "first_divergence",
           "float32_matmul_precision", "gamma", "half_output_tolerance", "linear_error_bound", "output_tolerance"]
