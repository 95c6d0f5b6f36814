"""Elementwise epilogues applied to a kernel's accumulator before it is stored.

Each maps a TIR float32 expression to one with the meaning of the PyTorch
function of the same name (``gelu`` is the exact erf form). TVM lowers
``erf``/``exp``/``tanh`` to scalar libm calls, which made a fused GELU ten
times slower than the matmul it follows; the versions here use only
arithmetic that LLVM vectorises:

- exp: Cody-Waite range reduction ``x = n ln2 + r`` (|r| <= ln2/2), a degree-7
  Taylor polynomial for e^r (truncation < 1e-8 relative), and 2^n built in the
  float's exponent bits.
- erf: a rational function ``x P(x^2) / Q(x^2)`` (degree 5 over 5 in x^2) on
  ``|x| <= 3.92``, its value at +-3.92 beyond (1.0f there, as erf(3.92) rounds to). Its
  coefficients were fitted here (Sanathanan-Koerner least squares with minimax
  reweighting against scipy's erf); evaluated in float32 its error is below
  4e-7. Eleven multiply-adds and one division: half the work of
  ``1 - poly(t) e^{-x^2}`` forms, which need an exp as well (a fused GELU
  cost a third of its matmul that way).
- sigmoid and tanh from exp; for |x| < 0.3 tanh uses its odd Taylor series
  (to x^11) to avoid the cancellation in ``1 - 2 / (e^{2x} + 1)``.
"""

from __future__ import annotations

import math

from sparsepass.codegen.io_dtype import narrow, widen
from sparsepass.codegen.tvm_api import tirx


def _f(value: float):
    return tirx.const(value, "float32")


def _poly(x, coefficients):
    """Horner evaluation of sum(c_i x^i) with coefficients from the constant term up."""
    result = _f(coefficients[-1])
    for c in reversed(coefficients[:-1]):
        result = result * x + _f(c)
    return result


_LN2_HI = 0.693145751953125  # ln 2 split so that n * _LN2_HI is exact for |n| < 2^11
_LN2_LO = 1.42860682030941723212e-6
_EXP_TAYLOR = [1 / math.factorial(i) for i in range(8)]


#: fast_exp clamps its argument to [EXP_MIN_ARG, 88]: below, it returns e^EXP_MIN_ARG (1.6e-38).
EXP_MIN_ARG = -87.0


def fast_exp(v):
    """e^v for float32 ``v`` with only vectorisable operations (clamped to float32's range)."""
    x = tirx.min(tirx.max(v, _f(EXP_MIN_ARG)), _f(88.0))
    n = tirx.floor(x * _f(1 / math.log(2)) + _f(0.5))
    r = x - n * _f(_LN2_HI) - n * _f(_LN2_LO)
    two_n = tirx.reinterpret("float32", tirx.shift_left(tirx.Cast("int32", n) + 127, 23))
    return _poly(r, _EXP_TAYLOR) * two_n


# Inputs are clamped where the float32 result has saturated, so that no
# intermediate becomes denormal: denormal arithmetic made a fused GELU 10x slower.
_TANH_SATURATES = 9.0  # tanh(9) = 1 - 3e-8, which rounds to 1.0f
_SIGMOID_FLOOR = -80.0  # sigmoid(-80) = 1.8e-35: below it, |silu| < 1.5e-33

#: erf(x) = x * P(x^2) / Q(x^2) on |x| < _ERF_SATURATES (coefficients from the constant term up).
_ERF_P = [1.128379023, 0.1927514232, 0.0530588913, 0.003867805937, 0.0002874711825, 2.034879279e-06]
_ERF_Q = [1.0, 0.5041531711, 0.1150794683, 0.01517125194, 0.001187995086, 3.807170482e-05]
_ERF_SATURATES = 3.92  # erf(3.92) = 1 - 2.6e-8, which rounds to 1.0f


def fast_erf(v):
    """erf(v) to 4e-7 absolute (a rational fit, see the module docstring), vectorisable. Beyond
    the clamp the fit's value at +-3.92 stands in for +-1 (within its error of erf(3.92), itself
    2.6e-8 from 1): cheaper than selecting the constants."""
    x = tirx.min(tirx.max(v, _f(-_ERF_SATURATES)), _f(_ERF_SATURATES))
    t = x * x
    return x * _poly(t, _ERF_P) / _poly(t, _ERF_Q)


def fast_sigmoid(v):
    return _f(1.0) / (_f(1.0) + fast_exp(-tirx.max(v, _f(_SIGMOID_FLOOR))))


_TANH_TAYLOR = [1.0, -1 / 3, 2 / 15, -17 / 315, 62 / 2835, -1382 / 155925]


def fast_tanh(v):
    """tanh(v): odd Taylor series near 0, ``1 - 2 / (e^{2|v|} + 1)`` elsewhere."""
    ax = tirx.min(tirx.abs(v), _f(_TANH_SATURATES))
    large = _f(1.0) - _f(2.0) / (fast_exp(_f(2.0) * ax) + _f(1.0))
    small = ax * _poly(ax * ax, _TANH_TAYLOR)
    magnitude = tirx.Select(ax < _f(0.3), small, large)
    return tirx.Select(v < _f(0.0), -magnitude, magnitude)


def _none(v):
    return v


def _relu(v):
    return tirx.max(v, _f(0.0))


def _relu6(v):
    """PyTorch's ``relu6`` (``hardtanh(v, 0, 6)``, MobileNet's activation)."""
    return tirx.min(tirx.max(v, _f(0.0)), _f(6.0))


def _gelu(v):
    return v * _f(0.5) * (_f(1.0) + fast_erf(v * _f(1 / math.sqrt(2))))


def _gelu_tanh(v):
    """PyTorch's ``gelu(approximate="tanh")``: 0.5 v (1 + tanh(sqrt(2/pi) (v + 0.044715 v^3)))."""
    return v * _f(0.5) * (_f(1.0) + fast_tanh(_f(math.sqrt(2 / math.pi)) * (v + _f(0.044715) * v * v * v)))


def _silu(v):
    return v * fast_sigmoid(v)


#: Absolute error bound of each epilogue as (a, b): |ours(x) - exact(x)| <= a + b |x|, from the
#: approximation errors above plus float32 rounding (checked on a dense grid by the tests).
ERROR_BOUNDS = {
    "none": (0.0, 0.0),
    "relu": (0.0, 0.0),
    "relu6": (0.0, 0.0),
    "gelu": (0.0, 4.0e-7),  # 0.5|x| (erf error 4e-7) + a few ulps of x
    "gelu_tanh": (0.0, 4.0e-7),  # 0.5|x| (tanh error 1.8e-7) + a few ulps of x
    "silu": (0.0, 2.5e-7),  # |x| (sigmoid error 6e-8) + a few ulps of x
    "tanh": (1.8e-7, 0.0),
}

_EPILOGUES = {"none": _none, "relu": _relu, "relu6": _relu6, "gelu": _gelu, "gelu_tanh": _gelu_tanh, "silu": _silu,
              "tanh": fast_tanh}


def epilogue_fn(name: str):
    """The TIR expression builder for epilogue ``name`` (see spec.EPILOGUES)."""
    try:
        return _EPILOGUES[name]
    except KeyError:
        raise ValueError(f"unknown epilogue {name!r}; expected one of {sorted(_EPILOGUES)}") from None


def result_fn(spec):
    """For a BSR KernelSpec: the float32 result of an accumulator, ``act(acc + R[at])`` with a
    residual, else ``act(acc)`` (for kernels that round it to Y's dtype themselves)."""
    act = epilogue_fn(spec.epilogue)

    def result(value, R, at):
        return act(value + widen(R[at], spec.dtype)) if spec.residual else act(value)

    return result


def finisher(spec):
    """For a BSR KernelSpec: the store-time expression, the result rounded to Y's dtype."""
    result = result_fn(spec)

    def finish(value, R, at):
        return narrow(result(value, R, at), spec.dtype)

    return finish
