"""The same scenario and seed give identical metrics on CPU, twice in a row."""

import json

from tests.conftest import scenariolab_command

import subprocess


def run_once(out, repo_root, name="cartpole_ppo", budget="smoke"):
    result = subprocess.run(
        [*scenariolab_command(), "run", name, "--budget", budget, "--out", str(out), "--no-progress", "--set", "evaluation.episodes=3"],
        cwd=repo_root, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    (metrics_path,) = out.glob(f"{name}/*/metrics.json")
    (jsonl_path,) = out.glob(f"{name}/*/metrics.jsonl")
    training = [
        {k: v for k, v in json.loads(line).items() if k != "charts/SPS"}
        for line in jsonl_path.read_text().splitlines()
    ]
    return json.loads(metrics_path.read_text())["metrics"], training


def test_same_seed_same_metrics(tmp_path, repo_root):
    first = run_once(tmp_path / "a", repo_root)
    second = run_once(tmp_path / "b", repo_root)
    assert first[0] == second[0]
    assert first[1] == second[1]
    assert len(first[1]) > 0


def test_same_seed_same_metrics_dqn(tmp_path, repo_root):
    first = run_once(tmp_path / "a", repo_root, "cartpole_dqn")
    second = run_once(tmp_path / "b", repo_root, "cartpole_dqn")
    assert first == second
