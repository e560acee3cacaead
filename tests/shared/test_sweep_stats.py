"""Sweep-report statistics on hand-made samples, with the expected values worked out in the comments."""

import json
import math

import numpy as np
import pytest

from shared.sweep_report import (
    GridPoint,
    bootstrap_curve_band,
    interval_estimates,
    learning_curves,
    performance_profiles,
    probability_of_improvement,
)


def test_bootstrap_ci_binomial_sample():
    # Seeds scored 0, 0, 0, 1. A resampled mean is K/4 with K ~ Binomial(4, 1/4):
    # P(K=0) = 0.316 > 0.025, so the 2.5% quantile is 0; P(K<=2) = 0.949 < 0.975 and
    # P(K<=3) = 0.996, so the 97.5% quantile is 3/4.
    stats = interval_estimates({"a": np.array([[0.0], [0.0], [0.0], [1.0]])})["a"]
    assert stats["mean"] == pytest.approx(0.25)
    assert stats["mean_lo"] == pytest.approx(0.0)
    assert stats["mean_hi"] == pytest.approx(0.75)


def test_bootstrap_ci_two_seeds():
    # Two seeds, 0 and 1: a resampled mean is 0, 0.5 or 1 with probabilities 1/4, 1/2, 1/4,
    # so the 95% percentile interval is [0, 1].
    stats = interval_estimates({"a": np.array([[0.0], [1.0]])})["a"]
    assert stats["mean"] == pytest.approx(0.5)
    assert stats["mean_lo"] == pytest.approx(0.0)
    assert stats["mean_hi"] == pytest.approx(1.0)


def test_bootstrap_ci_constant_sample_has_zero_width():
    stats = interval_estimates({"a": np.array([[7.0], [7.0], [7.0]])})["a"]
    assert (stats["mean"], stats["mean_lo"], stats["mean_hi"]) == (7.0, 7.0, 7.0)
    assert (stats["iqm"], stats["iqm_lo"], stats["iqm_hi"]) == (7.0, 7.0, 7.0)


def test_iqm_drops_outer_quarters():
    # Eight seeds: the IQM averages the middle four values (3, 4, 5, 6), ignoring the outlier 1000.
    scores = np.array([[1.0], [2.0], [3.0], [4.0], [5.0], [6.0], [7.0], [1000.0]])
    stats = interval_estimates({"a": scores})["a"]
    assert stats["iqm"] == pytest.approx(4.5)
    assert stats["mean"] == pytest.approx(1028.0 / 8)
    assert stats["iqm_lo"] <= 4.5 <= stats["iqm_hi"]


def test_grid_points_bootstrapped_separately():
    # Each grid point is its own stratum: a constant point keeps a zero-width CI beside a noisy one.
    stats = interval_estimates({"flat": np.array([[3.0], [3.0]]), "noisy": np.array([[0.0], [10.0]])})
    assert stats["flat"]["mean_lo"] == stats["flat"]["mean_hi"] == 3.0
    assert stats["noisy"]["mean_lo"] == pytest.approx(0.0)
    assert stats["noisy"]["mean_hi"] == pytest.approx(10.0)


def test_probability_of_improvement_counts_pairs():
    # X = {1, 2}, Y = {0, 3}: of the four (x, y) pairs, 1>0 and 2>0 win, 1<3 and 2<3 lose: 2/4.
    rows = probability_of_improvement({"x": np.array([[1.0], [2.0]]), "y": np.array([[0.0], [3.0]])})
    assert len(rows) == 1
    x, y, estimate, low, high = rows[0]
    assert (x, y) == ("x", "y")
    assert estimate == pytest.approx(0.5)
    assert 0.0 <= low <= estimate <= high <= 1.0


def test_probability_of_improvement_ties_count_half():
    rows = probability_of_improvement({"x": np.array([[1.0], [1.0]]), "y": np.array([[1.0], [1.0]])}, with_ci=False)
    assert rows[0][2] == pytest.approx(0.5)
    assert math.isnan(rows[0][3])


def test_performance_profile_fractions():
    # Seeds scored 1 and 3: above tau=0 both (1.0), above tau=2 one (0.5), above tau=4 none (0.0).
    profiles, bands = performance_profiles({"a": np.array([[1.0], [3.0]])}, np.array([0.0, 2.0, 4.0]))
    np.testing.assert_allclose(profiles["a"], [1.0, 0.5, 0.0])
    assert bands["a"].shape == (2, 3)


def test_curve_band_identical_seeds():
    curves = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    mean, low, high = bootstrap_curve_band(curves)
    np.testing.assert_allclose(mean, [1.0, 2.0, 3.0])
    np.testing.assert_allclose(low, mean)
    np.testing.assert_allclose(high, mean)


def test_curve_band_ignores_missing_seed_values():
    curves = np.array([[np.nan, 2.0], [4.0, 6.0]])
    mean, low, high = bootstrap_curve_band(curves)
    np.testing.assert_allclose(mean, [4.0, 4.0])
    assert low[1] == pytest.approx(2.0)
    assert high[1] == pytest.approx(6.0)


def test_learning_curve_bins(tmp_path):
    # Episodes end at steps 30 (return 1), 40 (return 3) and 90 (return 5). With bins of 25 steps,
    # bin [0, 25) has no episode yet (NaN), [25, 50) averages 1 and 3, [50, 75) carries 2 forward
    # and [75, 100] contains 5.
    records = [
        {"global_step": 30, "charts/episodic_return": 1.0},
        {"global_step": 35, "losses/value_loss": 0.5},
        {"global_step": 40, "charts/episodic_return": 3.0},
        {"global_step": 90, "charts/episodic_return": 5.0},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    group = GridPoint("p", {}, seeds=[0], metrics=[{}], run_dirs=[tmp_path])
    rows = learning_curves(group, np.array([0.0, 25.0, 50.0, 75.0, 100.0]))
    assert rows.shape == (1, 4)
    assert math.isnan(rows[0, 0])
    np.testing.assert_allclose(rows[0, 1:], [2.0, 2.0, 5.0])


def write_trial(folder, trial_id: str, point: dict, seed: int, score: float, extra: dict | None = None) -> dict:
    run_dir = folder / "trials" / trial_id
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").write_text(json.dumps({"seed": seed, "metrics": {"return_mean": score, "episode_length_mean": score, **(extra or {})}}))
    records = [{"global_step": step, "charts/episodic_return": score * step / 100} for step in (25, 50, 75, 100)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return {"id": trial_id, "point": point, "seed": seed, "status": "done", "attempts": 1, "run_dir": f"trials/{trial_id}", "errors": [], "git_commit": "abc123"}


def test_report_robustness_and_failed_trial(tmp_path):
    # A hand-made sweep folder: return falls with obs noise, and one trial failed.
    from shared.sweep_report import write_sweep_report

    trials = []
    for p, (noise, lr) in enumerate([("0", "1e-3"), ("0", "3e-4"), ("0.1", "1e-3"), ("0.1", "3e-4")]):
        for seed in (0, 1):
            score = 100.0 - 500.0 * float(noise) + seed
            collisions = {"collision_rate": 2.0 * float(noise)}
            trials.append(write_trial(tmp_path, f"p{p:02d}-seed{seed}", {"perturb.obs_noise": noise, "agent.learning_rate": lr}, seed, score, collisions))
    trials[-1].update(status="failed", attempts=3, error="RuntimeError: boom")
    record = {
        "scenario": "demo", "scenario_path": "/x/demo.yaml", "budget": "smoke", "seeds": [0, 1], "set": [],
        "grid": {"perturb.obs_noise": ["0", "0.1"], "agent.learning_rate": ["1e-3", "3e-4"]},
        "command": "scenariolab sweep demo --seeds 2", "git_commit": "abc123", "trials": trials,
    }
    (tmp_path / "sweep.json").write_text(json.dumps(record))

    text = write_sweep_report(tmp_path).read_text()
    assert "Robustness to perturb.obs_noise" in text
    assert (tmp_path / "report_plots" / "robustness_perturb_obs_noise.png").read_bytes().startswith(b"\x89PNG")
    # The collision rate, which every trial reports, gets its own curve and column. cost_mean,
    # which no trial reports, does not.
    assert "`return_mean`, `collision_rate` against `perturb.obs_noise`" in text
    assert "| grid point | return_mean | collision_rate |" in text
    assert "| perturb.obs_noise=0.1, agent.learning_rate=1e-3 | 50.5 [50, 51] | 0.2 [0.2, 0.2] |" in text
    # Grid point 0 (noise 0, lr 1e-3) scored 100 and 101: mean 100.5.
    assert "| perturb.obs_noise=0, agent.learning_rate=1e-3 | 2 | 100.5 |" in text
    # The last point lost its seed-1 trial, so only seed 0 (score 50) counts.
    assert "| perturb.obs_noise=0.1, agent.learning_rate=3e-4 | 1 | 50 |" in text
    assert "RuntimeError: boom" in text
    assert "Trials: 7 done, 1 failed, 0 not finished." in text
    assert text.count("`scenariolab sweep demo --seeds 2` at git commit `abc123`") >= 4
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4
