"""IQM and bootstrap CIs on hand-made samples."""

import numpy as np
import pytest

from shared.stats import aggregate, bootstrap_ci, bootstrap_difference_ci, iqm


def test_iqm_drops_quartiles():
    # Eight values: drop the two lowest and the two highest, average 3, 4, 5, 6.
    assert iqm([100, 1, 2, 3, 4, 5, 6, -50]) == pytest.approx((2 + 3 + 4 + 5) / 4)
    assert iqm([1, 2, 3, 4]) == pytest.approx(2.5)


def test_bootstrap_ci_constant_sample_has_zero_width():
    assert bootstrap_ci([3.0, 3.0, 3.0]) == (3.0, 3.0)


def test_bootstrap_ci_of_mean_matches_normal_theory():
    # For n = 400 draws of a fair coin, the CI of the mean is about p +- 1.96 * sqrt(p (1 - p) / n).
    values = np.array([0, 1] * 200, dtype=float)
    low, high = bootstrap_ci(values, samples=4000, seed=1)
    half_width = 1.96 * np.sqrt(0.25 / 400)
    assert low == pytest.approx(0.5 - half_width, abs=0.01)
    assert high == pytest.approx(0.5 + half_width, abs=0.01)


def test_bootstrap_ci_is_reproducible():
    values = np.arange(20.0)
    assert bootstrap_ci(values, seed=3) == bootstrap_ci(values, seed=3)


def test_aggregate_adds_iqm_and_skips_nan():
    episodes = [{"return_mean": 1.0, "min_ttc_mean": float("nan")}, {"return_mean": 3.0, "min_ttc_mean": 2.0}]
    metrics, ci95 = aggregate(episodes)
    assert metrics["return_mean"] == 2.0
    assert metrics["return_iqm"] == 2.0
    assert metrics["min_ttc_mean"] == 2.0
    assert ci95["return_mean"][0] >= 1.0
    assert ci95["return_mean"][1] <= 3.0


def test_difference_ci_of_constant_samples_is_their_gap():
    assert bootstrap_difference_ci([5.0, 5.0, 5.0], [2.0, 2.0]) == (3.0, 3.0)


def test_difference_ci_of_two_point_samples():
    # Each 2-value sample's bootstrap mean is its low value, its midpoint or its high value with
    # probabilities 1/4, 1/2, 1/4. Treatment [0, 2] minus control [1, 1] therefore takes -1, 0, 1
    # with those probabilities, so the 2.5% and 97.5% quantiles are -1 and 1.
    low, high = bootstrap_difference_ci([0.0, 2.0], [1.0, 1.0], samples=20000)
    assert low == -1.0
    assert high == 1.0
    # A gap of 9 with samples spread over 2 excludes 0: every resampled difference lies in [7, 11].
    low, high = bootstrap_difference_ci([10.0, 11.0, 12.0], [1.0, 2.0, 3.0])
    assert 7.0 <= low < 9.0 < high <= 11.0
