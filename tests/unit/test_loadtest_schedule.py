"""Arrival schedules: rates, gap distributions, bounds and seeds hold."""

from __future__ import annotations

import statistics

import pytest

from loadtest.schedule import Arrivals, arrival_offsets, fixed_rate, gamma, poisson


def gaps(offsets: tuple[float, ...]) -> list[float]:
    return [b - a for a, b in zip((0.0, *offsets), offsets)]


def cv2(values: list[float]) -> float:
    return statistics.pvariance(values) / statistics.fmean(values) ** 2


def test_fixed_rate_is_exact():
    assert fixed_rate(4, duration=2) == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75], abs=1e-12)
    assert fixed_rate(4, count=3) == pytest.approx([0.0, 0.25, 0.5], abs=1e-12)


def test_fixed_rate_has_exactly_rate_times_duration_arrivals():
    offsets = fixed_rate(7, duration=30)
    assert len(offsets) == 210
    assert offsets[-1] < 30
    assert gaps(offsets)[1:] == pytest.approx([1 / 7] * 209, abs=1e-9)


def test_poisson_mean_gap_and_cv():
    arrivals = gaps(poisson(50, count=20_000, seed=1))
    assert statistics.fmean(arrivals) == pytest.approx(1 / 50, rel=0.03)
    assert cv2(arrivals) == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("burstiness", [0.25, 1.0, 4.0])
def test_gamma_mean_gap_and_cv2_equal_the_burstiness(burstiness):
    arrivals = gaps(gamma(20, burstiness, count=50_000, seed=2))
    assert statistics.fmean(arrivals) == pytest.approx(1 / 20, rel=0.03)
    assert cv2(arrivals) == pytest.approx(burstiness, rel=0.1)


def test_arrival_count_over_a_duration_matches_the_rate():
    # Poisson over a window: exactly rate x duration arrivals, whatever the seed.
    for seed in range(5):
        assert len(poisson(9, duration=15, seed=seed)) == 135
    assert len(poisson(100, duration=100, seed=3)) == 10_000
    assert len(gamma(100, 4.0, duration=100, seed=3)) == pytest.approx(10_000, rel=0.1)


def test_poisson_over_a_window_keeps_exponential_gaps():
    # Given its count, a Poisson process's arrivals are uniform over the
    # window: the gaps stay exponential (mean 1/rate, CV^2 1), not regular.
    offsets = poisson(50, duration=400, seed=11)
    assert all(0 <= t < 400 for t in offsets) and list(offsets) == sorted(offsets)
    arrivals = gaps(offsets)
    assert statistics.fmean(arrivals) == pytest.approx(1 / 50, rel=0.03)
    assert cv2(arrivals) == pytest.approx(1.0, abs=0.05)
    # Arrivals spread over the whole window, not bunched at its start.
    halves = sum(1 for t in offsets if t < 200), sum(1 for t in offsets if t >= 200)
    assert halves[0] == pytest.approx(halves[1], rel=0.05)


@pytest.mark.parametrize("arrivals", list(Arrivals))
def test_bounds_hold(arrivals):
    by_duration = arrival_offsets(arrivals, 40, duration=2.5, burstiness=3.0, seed=4)
    assert by_duration and all(0 <= t < 2.5 for t in by_duration)
    assert list(by_duration) == sorted(by_duration)
    assert len(arrival_offsets(arrivals, 40, count=17, seed=4)) == 17
    # Both bounds: whichever comes first.
    assert len(arrival_offsets(arrivals, 40, duration=100, count=5, seed=4)) == 5
    assert arrival_offsets(arrivals, 40, duration=2.5, count=100_000, burstiness=3.0, seed=4) == by_duration


def test_seeded_schedules_repeat_and_seeds_differ():
    assert poisson(10, count=100, seed=7) == poisson(10, count=100, seed=7)
    assert gamma(10, 4, count=100, seed=7) == gamma(10, 4, count=100, seed=7)
    assert poisson(10, count=100, seed=7) != poisson(10, count=100, seed=8)


def test_the_dispatcher_picks_the_named_process():
    assert arrival_offsets(Arrivals.FIXED, 5, count=10) == fixed_rate(5, count=10)
    assert arrival_offsets(Arrivals.POISSON, 5, count=10, seed=9) == poisson(5, count=10, seed=9)
    assert arrival_offsets(Arrivals.GAMMA, 5, count=10, burstiness=2, seed=9) == gamma(5, 2, count=10, seed=9)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: poisson(5), "needs a bound"),
        (lambda: fixed_rate(0, count=3), "rate must be a positive"),
        (lambda: poisson(-1, count=3), "rate must be a positive"),
        (lambda: gamma(5, 0, count=3), "burstiness must be a positive"),
        (lambda: fixed_rate(5, duration=0), "duration must be positive"),
    ],
)
def test_invalid_schedules_say_what_to_fix(call, message):
    with pytest.raises(ValueError, match=message):
        call()
