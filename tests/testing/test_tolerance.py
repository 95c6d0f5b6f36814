"""Derived tolerances: what they allow follows from the arithmetic, and they do not allow more."""

import torch

from sparsepass.testing import half_output_tolerance


def test_a_half_precision_output_may_differ_by_one_unit_in_the_last_place_not_two():
    """Two results rounded from float32 values a hair apart can land on neighbouring bfloat16
    numbers even where the reference itself is exact: one unit in the last place is allowed."""
    reference = torch.tensor([0.75, -0.5, 0.125], dtype=torch.bfloat16)
    exact = reference.double()  # the reference happens to be exact: its own error is 0
    atol, rtol = half_output_tolerance(reference, exact, max_reduction=8)
    one_ulp = 2.0 ** -8  # bfloat16's spacing in [0.5, 1)
    assert atol < 1e-5 and one_ulp <= atol + rtol * 0.75 < 2 * one_ulp


def test_a_half_precision_reference_with_larger_errors_allows_twice_them():
    exact = torch.linspace(-3, 3, 101, dtype=torch.float64)
    reference = (exact + 0.02).to(torch.float16)  # a reference 0.02 off everywhere
    atol, rtol = half_output_tolerance(reference, exact, max_reduction=8)
    own = float((reference.double() - exact).abs().max())
    assert 2 * own <= atol < 2 * own + 1e-5 and rtol == torch.finfo(torch.float16).eps
