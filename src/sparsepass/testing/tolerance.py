"""Tolerances derived from the arithmetic, never picked to make a test pass.

A float sum of K products computed in any order differs from the exact sum by
at most ``gamma_K * sum_i |x_i w_i|`` with ``gamma_K = K * eps / (1 - K * eps)``
(Higham, Accuracy and Stability of Numerical Algorithms, 3.1). Two
implementations that sum in different orders (dense BLAS, our sparse kernels)
therefore differ by at most twice that. A missing or misplaced block changes
the result by about ``|x_i w_i|`` itself, far above the bound.
"""

from __future__ import annotations

import numpy as np
import torch


def gamma(k: int, dtype=torch.float32) -> float:
    """Higham's gamma_k for ``dtype``: the relative error bound of a k-term dot product."""
    eps = torch.finfo(dtype).eps / 2  # unit roundoff
    ku = k * eps
    if ku >= 1:
        raise ValueError(f"reduction length {k} is too long for a meaningful {dtype} bound")
    return ku / (1 - ku)


def linear_error_bound(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Elementwise bound on |dense - sparse| for ``x @ weight.T`` (bias adds one rounding)."""
    k = weight.shape[-1]
    magnitude = x.abs().double() @ weight.abs().double().T
    return 2 * gamma(k + 1, x.dtype) * magnitude + torch.finfo(x.dtype).tiny


def assert_linear_close(actual: torch.Tensor, expected: torch.Tensor, x: torch.Tensor,
                        weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
    """Assert ``actual`` equals ``x @ weight.T + bias`` within the derived rounding bound."""
    bound = linear_error_bound(x, weight)
    if bias is not None:
        bound = bound + torch.finfo(x.dtype).eps * (expected.abs().double() + bias.abs().double())
    diff = (actual.double() - expected.double()).abs()
    excess = diff - bound
    if not torch.isfinite(actual).eq(torch.isfinite(expected)).all():
        raise AssertionError("finite/non-finite pattern differs between actual and expected")
    excess = torch.where(torch.isfinite(expected), excess, torch.zeros_like(excess))
    if (excess > 0).any():
        worst = np.unravel_index(int(excess.argmax()), tuple(excess.shape))
        raise AssertionError(
            f"element {tuple(int(i) for i in worst)}: actual {actual[worst].item():.9g} vs expected "
            f"{expected[worst].item():.9g}, |diff| {diff[worst].item():.3g} > bound {bound[worst].item():.3g}"
        )


#: Dtypes whose products PyTorch and sparsepass accumulate in float32, rounding each result once.
HALF_DTYPES = (torch.float16, torch.bfloat16)


def output_tolerance(reference: torch.Tensor, max_reduction: int) -> float:
    """Absolute tolerance for a whole model's output: gamma of its longest reduction, scaled.

    A model chains reductions through normalisations, so no rigorous bound is
    cheap; this is the two-implementation bound of its longest reduction,
    relative to the output's largest magnitude (at least 1). Half-precision
    outputs need `half_output_tolerance` instead (their gamma exceeds 1 for
    reductions of a few hundred terms).
    """
    scale = max(1.0, float(reference.detach().abs().max())) if reference.numel() else 1.0
    return 2 * gamma(max_reduction, reference.dtype) * scale


def half_output_tolerance(reference: torch.Tensor, exact: torch.Tensor, max_reduction: int) -> tuple[float, float]:
    """(atol, rtol) for a half-precision output, given ``exact``: the same computation in float64.

    Half-precision models round after every op, and a sparsepass kernel rounds once where
    PyTorch rounded several times (a fused bias, activation and residual), so the two differ by
    the rounding errors themselves, not by a reduction order. The reference's own error is
    measured: a candidate no further from the exact result than the reference is (everywhere
    within its largest error) differs from the reference by at most twice that error (atol,
    plus the float32 bound of the longest reduction: both accumulate in float32). And any
    element may differ by one unit in its last place (rtol = the dtype's epsilon): two results
    rounded from float32 values a hair apart can land on neighbouring half-precision numbers,
    even where the reference's largest error is under half a unit.
    """
    if not reference.numel():
        return 0.0, 0.0
    own_error = float((reference.detach().double() - exact.detach().double()).abs().max())
    scale = max(1.0, float(reference.detach().abs().max()))
    return 2 * own_error + 2 * gamma(max_reduction, torch.float32) * scale, torch.finfo(reference.dtype).eps
