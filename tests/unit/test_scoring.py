"""Score maths: a stable softmax over label log-probabilities."""

from __future__ import annotations

import math

import pytest

from brew.scoring import label_probabilities

TOLERANCE = 1e-12


@pytest.mark.parametrize(
    "logprobs",
    [
        (-0.1, -2.5),
        (-1.2, -0.7, -3.0, -5.5),
        (0.0, 0.0, 0.0),
        (-100.0, -100.5),
        (-1e4, -1e4 + 1.0),
        (1e4, 1e4 - 3.0, -1e4),
        (-math.inf, -0.3),
        (-7.0,),
    ],
)
def test_probabilities_are_finite_and_sum_to_one(logprobs):
    probs = label_probabilities(logprobs)
    assert len(probs) == len(logprobs)
    assert all(math.isfinite(p) and 0.0 <= p <= 1.0 for p in probs)
    assert math.fsum(probs) == pytest.approx(1.0, abs=TOLERANCE)


@pytest.mark.parametrize(("yes", "no"), [(-0.2, -1.9), (-3.0, -0.05), (-0.6931, -0.6931), (-12.0, -30.0)])
def test_binary_score_is_p_yes_over_p_yes_plus_p_no(yes, no):
    p_yes, p_no = math.exp(yes), math.exp(no)
    probs = label_probabilities((yes, no))
    assert probs[0] == pytest.approx(p_yes / (p_yes + p_no), rel=1e-12)
    assert probs[1] == pytest.approx(p_no / (p_yes + p_no), rel=1e-12)


def test_values_far_below_zero_keep_their_ratio():
    # exp(-1e4) underflows to 0 in float64; a naive softmax gives 0/0.
    probs = label_probabilities((-1e4, -1e4 - math.log(3.0)))
    assert probs == pytest.approx((0.75, 0.25), abs=TOLERANCE)


def test_values_far_above_zero_do_not_overflow():
    probs = label_probabilities((1e4, 1e4))
    assert probs == pytest.approx((0.5, 0.5), abs=TOLERANCE)


def test_the_paper_example_of_close_low_values():
    # -100 vs -100.5: P = 1 / (1 + e^-0.5)
    probs = label_probabilities((-100.0, -100.5))
    assert probs[0] == pytest.approx(1.0 / (1.0 + math.exp(-0.5)), rel=1e-12)


def test_a_label_without_mass_gets_zero():
    assert label_probabilities((-math.inf, -0.3, -math.inf)) == (0.0, 1.0, 0.0)


def test_all_labels_without_mass_give_a_uniform_answer():
    assert label_probabilities((-math.inf,) * 4) == (0.25, 0.25, 0.25, 0.25)


@pytest.mark.parametrize("shift", [-50.0, -1e4, 3.7, 1e4])
def test_adding_a_constant_changes_nothing(shift):
    # Log-probs and logits differ by one constant per position.
    logprobs = (-0.4, -1.6, -2.2, -7.0)
    shifted = tuple(value + shift for value in logprobs)
    assert label_probabilities(shifted) == pytest.approx(label_probabilities(logprobs), abs=1e-9)


def test_the_order_of_the_answer_is_the_order_of_the_labels():
    probs = label_probabilities((-3.0, -0.1, -1.0))
    assert probs[1] > probs[2] > probs[0]


def test_no_labels_is_an_error():
    with pytest.raises(ValueError, match="at least one label"):
        label_probabilities(())


def test_nan_is_an_error_not_a_score():
    with pytest.raises(ValueError, match="NaN"):
        label_probabilities((-0.5, math.nan))
