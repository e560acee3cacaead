"""Atari scenarios through the `scenariolab` CLI: a smoke run with evaluation, bad input, and video recording."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest

from apps.game_ai.atari import record_episode
from shared.errors import ScenarioError
from shared.scenario import load_scenario

# Short evaluations keep the CLI tests to seconds: one game of at most 100 agent steps.
SHORT_EVAL = [
    "--set", "evaluation.episodes=1",
    "--set", "evaluation.seeds=[10000]",
    "--set", "env.max_episode_steps=100",
    "--set", "torch_threads=1",
]


def scenariolab(*args: str, env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def only_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


# Smoke budgets from scenarios/defaults/atari_{dqn,ppo}.yaml; breakout_dqn has its own test below.
# Double DQN is the dqn agent with its double_q option on.
SMOKE_RUNS = [
    ("pong_dqn", "dqn", 400),
    ("pong_double_dqn", "dqn", 400),
    ("pong_ppo", "ppo", 1024),
    ("breakout_double_dqn", "dqn", 400),
    ("breakout_ppo", "ppo", 1024),
]


@pytest.mark.slow
@pytest.mark.parametrize(("scenario", "agent", "smoke_steps"), SMOKE_RUNS, ids=[row[0] for row in SMOKE_RUNS])
def test_atari_scenario_smoke_run(tmp_path, scenario, agent, smoke_steps):
    learning_starts = ["--set", "agent.learning_starts=200"] if agent == "dqn" else []  # so DQN also trains
    result = scenariolab("run", scenario, "--budget", "smoke", "--out", str(tmp_path), "--no-progress", *learning_starts, *SHORT_EVAL)
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / scenario).iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["scenario"] == scenario
    assert metrics["agent"] == agent
    assert metrics["episodes"] == 1
    assert metrics["train_steps"] >= smoke_steps
    assert 1 <= metrics["metrics"]["episode_length_mean"] <= 100
    assert (run_dir / "checkpoints" / "latest.safetensors").exists()


@pytest.mark.slow
def test_breakout_dqn_smoke_run_and_eval(tmp_path):
    result = scenariolab(
        "run", "breakout_dqn", "--budget", "smoke", "--out", str(tmp_path), "--no-progress",
        "--set", "agent.learning_starts=200", *SHORT_EVAL,
    )
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "breakout_dqn").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["scenario"] == "breakout_dqn"
    assert metrics["agent"] == "dqn"
    assert metrics["episodes"] == 1
    assert {"return_mean", "return_iqm", "episode_length_mean"} <= set(metrics["metrics"])
    assert 1 <= metrics["metrics"]["episode_length_mean"] <= 100
    assert "random" in metrics["baselines"]
    assert (run_dir / "checkpoints" / "latest.safetensors").exists()
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert max(row["global_step"] for row in logged) >= 400
    assert any("losses/td_loss" in row for row in logged), "learning_starts=200 < 400 smoke steps, so DQN trained"

    evaluation = scenariolab(
        "eval", "breakout_dqn", "--checkpoint", str(run_dir / "checkpoints" / "latest"),
        "--episodes", "1", "--seeds", "3", "--no-baseline", "--out", str(tmp_path / "eval"),
        "--set", "env.max_episode_steps=50", "--set", "torch_threads=1",
    )
    assert evaluation.returncode == 0, evaluation.stderr
    (eval_metrics,) = (tmp_path / "eval").rglob("metrics.json")
    summary = json.loads(eval_metrics.read_text())
    assert summary["episodes"] == 1
    assert summary["metrics"]["episode_length_mean"] <= 50


def test_unknown_game_exits_2(tmp_path):
    result = scenariolab("run", "pong_ppo", "--budget", "smoke", "--out", str(tmp_path), "--set", "env.id=ALE/Pongg-v5")
    assert result.returncode == 2
    line = only_line(result.stderr)
    assert "pong_ppo.yaml: env.id: unknown value 'ALE/Pongg-v5'" in line
    assert "Did you mean 'ALE/Pong-v5'?" in line


def test_dqn_on_continuous_actions_exits_2(tmp_path):
    result = scenariolab("run", "pong_dqn", "--budget", "smoke", "--out", str(tmp_path), "--set", "env.config.continuous=true")
    assert result.returncode == 2
    line = only_line(result.stderr)
    assert "pong_dqn.yaml: agent.name: dqn needs discrete actions" in line


def test_missing_rom_exits_2(tmp_path):
    result = scenariolab("validate", "scenarios/game_ai/breakout_ppo.yaml", env={"ALE_ROMS_DIR": str(tmp_path)})
    assert result.returncode == 2
    line = only_line(result.stderr)
    assert "breakout_ppo.yaml: env.id: cannot load the ROM of ALE/Breakout-v5" in line
    assert "breakout.bin" in line


def test_record_episode_mp4_and_gif(tmp_path, repo_root):
    loaded = load_scenario(str(repo_root / "scenarios/game_ai/breakout_ppo.yaml"), ["env.max_episode_steps=30"])
    rng = np.random.default_rng(0)
    steps = []

    def policy(obs: np.ndarray) -> int:
        assert obs.shape == (4, 84, 84)
        steps.append(1)
        return int(rng.integers(4))

    mp4 = record_episode(loaded, policy, tmp_path / "videos" / "breakout.mp4", seed=1)
    assert mp4 == tmp_path / "videos" / "breakout.mp4"
    reader = imageio.get_reader(str(mp4))
    meta = reader.get_meta_data()
    frames = [frame for frame in reader]
    reader.close()
    assert meta["codec"] == "h264"
    assert meta["fps"] == pytest.approx(15.0)
    # RecordVideo captures the reset frame and one frame per step; moviepy 2.1 may drop the last one.
    assert len(steps) <= len(frames) <= len(steps) + 1
    assert len(steps) <= 30
    assert frames[0].shape == (210, 160, 3)

    gif = record_episode(loaded, policy, tmp_path / "breakout.gif", seed=1)
    assert len(imageio.mimread(str(gif))) == len(frames)

    with pytest.raises(ScenarioError, match=r"unsupported video format; allowed suffixes: \.mp4, \.gif"):
        record_episode(loaded, policy, tmp_path / "breakout.avi")


# (scenario, games, lowest mean return). Breakout's shipped PPO averages about 9 points per game
# and a random policy about 1.4. Pong's averages -16.6 over 30 games and a random policy -20.3; its
# game on seed 10000 scored -14 on the development machine, and -19 leaves room for sampled actions
# that differ on other CPUs.
SHIPPED_CHECKPOINTS = [("breakout_ppo", 3, 4.0), ("pong_ppo", 1, -19.0)]


@pytest.mark.slow
@pytest.mark.parametrize(("scenario", "games", "lowest_return"), SHIPPED_CHECKPOINTS, ids=[row[0] for row in SHIPPED_CHECKPOINTS])
def test_shipped_checkpoint_beats_random(tmp_path, scenario, games, lowest_return):
    result = scenariolab(
        "eval", scenario, "--episodes", str(games), "--seeds", "10000", "--no-baseline",
        "--out", str(tmp_path), "--set", "torch_threads=1",
    )
    assert result.returncode == 0, result.stderr
    (metrics_path,) = tmp_path.rglob("metrics.json")
    metrics = json.loads(metrics_path.read_text())
    assert metrics["episodes"] == games
    assert metrics["checkpoint"].endswith(f"apps/game_ai/checkpoints/{scenario}")
    assert metrics["metrics"]["return_mean"] >= lowest_return
