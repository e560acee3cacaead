"""Aggregate statistics for evaluation: mean, interquartile mean and percentile-bootstrap 95% CIs.

The IQM (mean of the middle 50% of values) and bootstrap intervals follow Agarwal et al. 2021,
"Deep Reinforcement Learning at the Edge of the Statistical Precipice", which argues for them over
the mean and standard deviation when only a few runs or episodes are available.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def iqm(values: Sequence[float] | np.ndarray) -> float:
    """Return the interquartile mean: the mean of the values between the 25th and 75th percentiles.

    Like ``scipy.stats.trim_mean(values, 0.25)``, it drops the lowest and highest quarter by count
    (whole values, rounding the count down) and averages the rest.
    """
    array = np.sort(np.asarray(values, dtype=np.float64).ravel())
    if array.size == 0:
        return float("nan")
    cut = int(0.25 * array.size)
    middle = array[cut : array.size - cut]
    return float(middle.mean())


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    samples: int = 2000,
    seed: int = 0,
    statistic: Callable[[np.ndarray], float] = np.mean,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Return the percentile-bootstrap confidence interval of ``statistic`` over ``values``.

    The values are resampled with replacement ``samples`` times with a generator seeded by ``seed``,
    so the interval is reproducible. A single value gives a zero-width interval.
    """
    array = np.asarray(values, dtype=np.float64).ravel()
    if array.size == 0:
        return (float("nan"), float("nan"))
    if array.size == 1 or np.all(array == array[0]):
        return (float(array[0]), float(array[0]))
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, array.size, size=(samples, array.size))
    resampled = array[indices]
    if statistic is np.mean:
        estimates = resampled.mean(axis=1)
    else:
        estimates = np.array([statistic(row) for row in resampled])
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(estimates, [alpha, 1.0 - alpha])
    return (float(low), float(high))


def bootstrap_difference_ci(
    treatment: Sequence[float] | np.ndarray,
    control: Sequence[float] | np.ndarray,
    samples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Return the percentile-bootstrap CI of ``mean(treatment) - mean(control)`` for two independent samples.

    Each sample is resampled with replacement on its own (a stratified bootstrap with two strata),
    so an interval that contains 0 means the two means do not differ beyond their seed-to-seed noise.
    """
    first = np.asarray(treatment, dtype=np.float64).ravel()
    second = np.asarray(control, dtype=np.float64).ravel()
    if first.size == 0 or second.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    first_means = first[rng.integers(0, first.size, size=(samples, first.size))].mean(axis=1)
    second_means = second[rng.integers(0, second.size, size=(samples, second.size))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(first_means - second_means, [alpha, 1.0 - alpha])
    return (float(low), float(high))


def aggregate(
    episodes: Sequence[dict[str, float]],
    samples: int = 2000,
    seed: int = 0,
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Aggregate per-episode metric dicts into means and 95% CIs.

    Every key is averaged over the episodes that report it. For each key ending in ``_mean`` an
    ``_iqm`` twin is added (``return_mean`` gives ``return_iqm``). NaN values (an episode with no
    defined minimum TTC, say) are left out of that key's statistics.
    """
    keys: list[str] = []
    for episode in episodes:
        for key in episode:
            if key not in keys:
                keys.append(key)
    metrics: dict[str, float] = {}
    ci95: dict[str, list[float]] = {}
    for key in keys:
        values = np.array([float(e[key]) for e in episodes if key in e], dtype=np.float64)
        values = values[~np.isnan(values)]
        if values.size == 0:
            metrics[key] = float("nan")
            ci95[key] = [float("nan"), float("nan")]
            continue
        metrics[key] = float(values.mean())
        ci95[key] = list(bootstrap_ci(values, samples=samples, seed=seed))
        if key.endswith("_mean"):
            iqm_key = key[: -len("_mean")] + "_iqm"
            metrics[iqm_key] = iqm(values)
            ci95[iqm_key] = list(bootstrap_ci(values, samples=samples, seed=seed, statistic=iqm))
    return metrics, ci95
