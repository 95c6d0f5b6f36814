"""The constants of the tanh-approximate GELU, ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``.

Shared by the torch.fx and Relax passes that recognise the formula written out op by op.
"""

from __future__ import annotations

import math

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
CUBIC = 0.044715


def near(value, constant: float) -> bool:
    """True when ``value`` is a real number equal to ``constant`` up to float32 rounding."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isclose(
        value, constant, rel_tol=1e-6)
