"""The connect_four_selfplay and cooperative_ppo scenarios through the `scenariolab` CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from apps.game_ai.connect_four import ConnectFourNet, save_policy
from apps.game_ai.cooperative import SharedActorCritic, save_shared_policy

# Short evaluations keep the CLI runs to seconds: 2 games per seat and opponent, 2 Elo games per pair.
SHORT_C4_EVAL = [
    "--set", "evaluation.episodes=2",
    "--set", "evaluation.seeds=[1]",
    "--set", "evaluation.interval=2000",
    "--set", "settings.elo_games_per_pair=2",
]
SHORT_PISTONBALL_EVAL = [
    "--set", "evaluation.episodes=1",
    "--set", "evaluation.seeds=[1]",
    "--set", "env.config.max_cycles=40",
]


def scenariolab(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def only_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.slow
def test_connect_four_smoke_run(tmp_path):
    result = scenariolab("run", "scenarios/game_ai/connect_four_selfplay.yaml", "--budget", "smoke", "--out", str(tmp_path), "--no-progress", *SHORT_C4_EVAL)
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "connect_four_selfplay").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["scenario"] == "connect_four_selfplay"
    assert metrics["episodes"] == 2 * 2 * 2  # games per seat x seats x opponents
    for name in ("win_rate_vs_random", "win_rate_vs_heuristic", "win_rate_vs_random_first", "win_rate_vs_heuristic_second", "elo", "return_mean"):
        assert name in metrics["metrics"], name
    assert "win_rate_vs_heuristic" in metrics["ci95"]
    assert "random" in metrics["baselines"]
    assert metrics["train_steps"] >= 4000
    for name in ("scenario.yaml", "metrics.jsonl", "report.md", "elo.json", "checkpoints/latest.safetensors", "checkpoints/latest.json", "checkpoints/pool/step_0.json"):
        assert (run_dir / name).exists(), name
    report = (run_dir / "report.md").read_text()
    assert "## Elo ladder" in report
    assert "| heuristic | second |" in report
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/win_rate_vs_heuristic" in row for row in logged)
    assert any("losses/approx_kl" in row for row in logged)


def test_connect_four_unknown_game_exits_2(tmp_path):
    result = scenariolab("run", "scenarios/game_ai/connect_four_selfplay.yaml", "--budget", "smoke", "--out", str(tmp_path), "--set", "env.id=connect_four_v2")
    assert result.returncode == 2
    line = only_line(result.stderr)
    assert "connect_four_selfplay.yaml: env.id: unknown value 'connect_four_v2'" in line
    assert "Did you mean 'connect_four_v3'?" in line


def test_connect_four_unknown_setting_exits_2(tmp_path):
    result = scenariolab("run", "scenarios/game_ai/connect_four_selfplay.yaml", "--budget", "smoke", "--out", str(tmp_path), "--set", "settings.pool_sise=4")
    assert result.returncode == 2
    assert "settings.pool_sise: unknown key. Did you mean 'pool_size'?" in only_line(result.stderr)


def test_connect_four_eval_rejects_pistonball_checkpoint(tmp_path):
    stem = tmp_path / "pistonball"
    save_shared_policy(stem, SharedActorCritic(9, 3, 10, (64, 64), False), "pistonball_v6", {})
    result = scenariolab("eval", "scenarios/game_ai/connect_four_selfplay.yaml", "--checkpoint", str(stem), "--out", str(tmp_path))
    assert result.returncode == 2
    line = only_line(result.stderr)
    assert "checkpoint is for 'cooperative_ppo' on 'pistonball_v6', expected 'connect_four_selfplay' on 'connect_four_v3'" in line


def test_connect_four_eval_rejects_other_architecture(tmp_path):
    stem = tmp_path / "small"
    save_policy(stem, ConnectFourNet((32,)), {})
    result = scenariolab("eval", "scenarios/game_ai/connect_four_selfplay.yaml", "--checkpoint", str(stem), "--out", str(tmp_path))
    assert result.returncode == 2
    assert "settings.hidden_sizes: the checkpoint has [32], the scenario asks for [128, 128]" in only_line(result.stderr)


@pytest.mark.slow
def test_shipped_connect_four_eval(tmp_path):
    result = scenariolab("eval", "scenarios/game_ai/connect_four_selfplay.yaml", "--episodes", "10", "--seeds", "5", "--out", str(tmp_path), "--no-baseline")
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "connect_four_selfplay").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    # 20 games per opponent: the shipped policy clears these margins by far (see the scenario's description).
    assert metrics["win_rate_vs_random"] >= 0.85
    assert metrics["win_rate_vs_heuristic"] >= 0.5


@pytest.mark.slow
def test_pistonball_smoke_run(tmp_path):
    result = scenariolab("run", "scenarios/game_ai/pistonball_ppo.yaml", "--budget", "smoke", "--out", str(tmp_path), "--no-progress", *SHORT_PISTONBALL_EVAL)
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "pistonball_ppo").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"return_mean", "return_iqm", "episode_length_mean"} <= set(metrics["metrics"])
    assert metrics["metrics"]["episode_length_mean"] <= 40
    assert "random" in metrics["baselines"]
    assert (run_dir / "checkpoints" / "latest.safetensors").exists()
    assert "parameter sharing" in (run_dir / "report.md").read_text()


def test_pistonball_unknown_env_exits_2(tmp_path):
    result = scenariolab("run", "scenarios/game_ai/pistonball_ppo.yaml", "--budget", "smoke", "--out", str(tmp_path), "--set", "env.id=pistonbal_v6")
    assert result.returncode == 2
    line = only_line(result.stderr)
    assert "pistonball_ppo.yaml: env.id: unknown value 'pistonbal_v6'" in line
    assert "Did you mean 'pistonball_v6'?" in line


def test_pistonball_eval_rejects_connect_four_checkpoint(tmp_path):
    stem = tmp_path / "c4"
    save_policy(stem, ConnectFourNet((16,)), {})
    result = scenariolab("eval", "scenarios/game_ai/pistonball_ppo.yaml", "--checkpoint", str(stem), "--out", str(tmp_path))
    assert result.returncode == 2
    assert "checkpoint is for 'connect_four_selfplay' on 'connect_four_v3', expected 'cooperative_ppo' on 'pistonball_v6'" in only_line(result.stderr)


def test_pistonball_eval_rejects_other_piston_count(tmp_path):
    stem = tmp_path / "five"
    save_shared_policy(stem, SharedActorCritic(9, 3, 5, (64, 64), False), "pistonball_v6", {})
    result = scenariolab("eval", "scenarios/game_ai/pistonball_ppo.yaml", "--checkpoint", str(stem), "--out", str(tmp_path))
    assert result.returncode == 2
    assert "num_slots: the checkpoint has 5, the scenario needs 10" in only_line(result.stderr)


@pytest.mark.slow
def test_connect_four_ctrl_c_saves_checkpoint(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "run", "scenarios/game_ai/connect_four_selfplay.yaml", "--out", str(tmp_path), "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = time.monotonic() + 300
    jsonl = None
    while time.monotonic() < deadline:
        found = list(tmp_path.glob("connect_four_selfplay/*/metrics.jsonl"))
        if found and found[0].read_text().count("\n") >= 2:
            jsonl = found[0]
            break
        time.sleep(0.5)
    assert jsonl is not None, "training logged nothing within 300 s"
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr
    assert "interrupted at global_step" in stdout
    metadata = json.loads((jsonl.parent / "checkpoints" / "latest.json").read_text())
    assert metadata["global_step"] > 0
    assert metadata["kind"] == "connect_four_selfplay"


def test_shipped_pistonball_eval(tmp_path):
    result = scenariolab("eval", "scenarios/game_ai/pistonball_ppo.yaml", "--episodes", "2", "--seeds", "3", "--out", str(tmp_path), "--no-baseline")
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "pistonball_ppo").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    # Uniform random pistons average about 4.5 per episode; the shipped policy about 88.
    assert metrics["return_mean"] > 40.0
