"""Learning tests at small budgets: thresholds a working algorithm clears and a broken one does not.

A uniformly random policy scores about 22 on CartPole-v1 (the random baseline in metrics.json).
"""

import pytest

from shared.kinds import RunOptions
from shared.registry import get_kind
from shared.rundir import RunDir
from shared.scenario import load_scenario


def train_and_evaluate(name: str, tmp_path, overrides: list[str] | None = None) -> dict:
    loaded = load_scenario(f"scenarios/classic/{name}.yaml", overrides or [])
    kind = get_kind(loaded.scenario.kind)
    run_dir = RunDir.create(tmp_path, loaded.name, loaded.scenario.seed)
    return kind.run(loaded, run_dir, RunOptions(budget="default", progress=False))


@pytest.mark.slow
def test_ppo_solves_cartpole_within_50k(tmp_path):
    summary = train_and_evaluate("cartpole_ppo", tmp_path)
    assert summary["train_steps"] <= 50_000 + 8 * 32
    assert summary["metrics"]["return_mean"] >= 195
    assert summary["baselines"]["random"]["metrics"]["return_mean"] < 40


@pytest.mark.slow
def test_dqn_learns_cartpole(tmp_path):
    summary = train_and_evaluate("cartpole_dqn", tmp_path)
    assert summary["metrics"]["return_mean"] >= 100
    assert summary["metrics"]["return_mean"] > 3 * summary["baselines"]["random"]["metrics"]["return_mean"]


@pytest.mark.slow
def test_a2c_learns_cartpole(tmp_path):
    summary = train_and_evaluate("cartpole_a2c", tmp_path)
    assert summary["metrics"]["return_mean"] >= 100
    assert summary["metrics"]["return_mean"] > 3 * summary["baselines"]["random"]["metrics"]["return_mean"]


@pytest.mark.slow
def test_reinforce_learns_cartpole(tmp_path):
    summary = train_and_evaluate("cartpole_reinforce", tmp_path, ["budget.default=60000"])
    assert summary["metrics"]["return_mean"] >= 100
