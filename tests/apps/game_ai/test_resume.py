"""`--resume` for the self-play and cooperative kinds: the run state in checkpoints and the CLI flow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from apps.game_ai.connect_four import load_policy, save_policy
from apps.game_ai.pong_selfplay import OpponentPool, PongSelfPlayEnv, PongSelfPlaySettings, pool_carrying
from apps.game_ai.selfplay import LEARNER, SelfPlaySettings, SelfPlayTrainer
from shared.agents import get_agent_class
from shared.checkpoints import load_agent, load_checkpoint, save_agent, unflatten_state

C4 = "scenarios/game_ai/connect_four_selfplay.yaml"
PISTONBALL = "scenarios/game_ai/pistonball_ppo.yaml"
# Small games and evaluations keep each CLI call to seconds; budget.default is the larger budget a run resumes to.
C4_SETTINGS = [
    "--set", "evaluation.episodes=1", "--set", "evaluation.seeds=[1]", "--set", "evaluation.interval=0",
    "--set", "settings.elo_games_per_pair=2", "--set", "settings.num_envs=16", "--set", "settings.rollout_steps=8",
    "--set", "settings.snapshot_interval=2", "--set", "settings.pool_size=3", "--set", "budget.smoke=1000",
    "--set", "budget.default=2500",
]
PISTONBALL_SETTINGS = [
    "--set", "evaluation.episodes=1", "--set", "evaluation.seeds=[1]", "--set", "env.config.max_cycles=40",
    "--set", "budget.default=1536",
]


def scenariolab(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", *args], capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )


def error_line(stderr: str) -> str:
    """The one error line of a failed command (progress lines such as 'resuming ...' may precede it)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line]
    assert "Traceback" not in stderr, stderr
    assert len(errors) == 1, stderr
    return errors[0]


def run_state(stem: Path) -> tuple[dict, dict]:
    """Return a checkpoint's JSON metadata and its unflattened run state."""
    tensors, metadata = load_checkpoint(stem)
    return metadata, unflatten_state(metadata["state"], tensors)


def smoke_run(tmp_path: Path, scenario: str, name: str, settings: list[str]) -> tuple[Path, dict, dict]:
    """Train ``scenario`` at the smoke budget; return its run folder and its latest checkpoint's run_state."""
    result = scenariolab("run", scenario, "--budget", "smoke", "--out", str(tmp_path), "--no-progress", *settings)
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / name).iterdir()
    return (run_dir, *run_state(run_dir / "checkpoints" / "latest"))


def adam_steps(state: dict) -> set[int]:
    """The optimiser step counts of every parameter in an Adam state dict."""
    return {int(entry["step"]) for entry in state["optimizer"]["state"].values()}


def test_connect_four_resume_matches_uninterrupted_run(tmp_path, one_torch_thread):
    settings = SelfPlaySettings(num_envs=8, rollout_steps=4, snapshot_interval=2, pool_size=3, heuristic_fraction=0.3, random_fraction=0.2, hidden_sizes=[16])
    uninterrupted = SelfPlayTrainer(settings, 2000, seed=5)
    uninterrupted.train(lambda tags: None)

    stopped = SelfPlayTrainer(settings, 2000, seed=5)
    stopped.train(lambda tags: None, should_stop=lambda: stopped.global_step >= 800)  # as Ctrl-C would
    save_policy(tmp_path / "latest", stopped.net, {}, run_state=stopped.run_state())
    assert stopped.global_step < uninterrupted.global_step

    resumed = SelfPlayTrainer(settings, 2000, seed=5)
    net, metadata = load_policy(tmp_path / "latest")
    assert metadata["resumable"] is True
    resumed.net.load_state_dict(net.state_dict())
    resumed.load_run_state(run_state(tmp_path / "latest")[1])
    assert (resumed.global_step, resumed.updates, [name for name, _ in resumed.pool]) == (stopped.global_step, stopped.updates, [name for name, _ in stopped.pool])
    resumed.train(lambda tags: None)

    assert (resumed.global_step, resumed.updates) == (uninterrupted.global_step, uninterrupted.updates)
    assert [name for name, _ in resumed.pool] == [name for name, _ in uninterrupted.pool]
    assert resumed.elo.ratings == uninterrupted.elo.ratings
    assert resumed.elo.games == uninterrupted.elo.games
    for ours, theirs in zip(resumed.net.state_dict().values(), uninterrupted.net.state_dict().values()):
        assert torch.equal(ours, theirs)
    ours, theirs = resumed.optimizer.state_dict()["state"], uninterrupted.optimizer.state_dict()["state"]
    for key in theirs:
        assert torch.equal(ours[key]["exp_avg"], theirs[key]["exp_avg"])
        assert torch.equal(ours[key]["exp_avg_sq"], theirs[key]["exp_avg_sq"])
    assert np.array_equal(resumed.board.board, uninterrupted.board.board)


def test_online_elo_counts_pool_and_scripted_games(one_torch_thread):
    settings = SelfPlaySettings(num_envs=8, rollout_steps=4, latest_fraction=0.0, heuristic_fraction=0.5, random_fraction=0.5, hidden_sizes=[16])
    trainer = SelfPlayTrainer(settings, 10_000, seed=1)
    trainer.collect()
    games = trainer.elo.games
    # Every opponent is scripted, so each finished game is one Elo game of the learner against random or heuristic.
    assert games[LEARNER] == len(trainer.finished) > 0
    assert games["random"] + games["heuristic"] == games[LEARNER]
    assert sum(trainer.elo.ratings.values()) == pytest.approx(1000.0 * len(trainer.elo.ratings))


@pytest.mark.slow
def test_connect_four_cli_resumes_to_larger_budget(tmp_path):
    run_dir, before, state_before = smoke_run(tmp_path, C4, "connect_four_selfplay", C4_SETTINGS)
    # 16 games x 8 learner moves = 128 learner moves per update, about 250 plies with the replies.
    assert 1000 <= before["global_step"] < 1300
    assert state_before["counters"] == {"global_step": before["global_step"], "updates": before["updates"]}
    # Each update takes 4 epochs x 4 minibatches of Adam steps.
    assert adam_steps(state_before) == {before["updates"] * 16}

    second = scenariolab("run", C4, "--budget", "default", "--out", str(tmp_path), "--no-progress", "--resume", *C4_SETTINGS)
    assert second.returncode == 0, second.stderr
    assert f"resumed from {run_dir / 'checkpoints' / 'latest'} at global_step {before['global_step']} with 3 pool snapshots" in second.stderr
    after, state_after = run_state(run_dir / "checkpoints" / "latest")
    assert 2500 <= after["global_step"] < 2800
    # The optimiser continued: a fresh Adam would count only the updates after the resume.
    assert adam_steps(state_after) == {after["updates"] * 16}
    assert after["updates"] > before["updates"]
    # Snapshots every 2 updates, the newest 3 kept.
    assert len(after["pool"]) == 3
    assert int(after["pool"][-1].removeprefix("step_")) > int(before["pool"][-1].removeprefix("step_"))
    # The Elo table continued: every rated player of the first part is still there with at least as many games.
    games_before, games_after = state_before["elo"]["games"], state_after["elo"]["games"]
    assert set(games_before) < set(games_after)
    assert all(games_after[name] >= count for name, count in games_before.items())
    assert games_after[LEARNER] > games_before[LEARNER]
    # One log line per update, with no step logged twice across the resume.
    steps = [json.loads(line)["global_step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))
    assert steps[-1] == after["global_step"]


def test_resume_without_an_earlier_run_exits_2(tmp_path):
    result = scenariolab("run", C4, "--budget", "smoke", "--out", str(tmp_path), "--resume")
    assert result.returncode == 2
    assert f"{tmp_path / 'connect_four_selfplay'}: --resume: no earlier run of this scenario with a latest checkpoint" in error_line(result.stderr)


def test_resume_of_another_scenarios_run_exits_2(tmp_path):
    from shared.scenario import load_scenario

    c4_run = tmp_path / "connect_four_selfplay" / "20260101-000000-seed0"
    (c4_run / "checkpoints").mkdir(parents=True)
    (c4_run / "scenario.yaml").write_text(load_scenario(C4).to_yaml(), encoding="utf-8")
    (c4_run / "checkpoints" / "latest.json").write_text("{}", encoding="utf-8")
    result = scenariolab("run", PISTONBALL, "--budget", "smoke", "--out", str(tmp_path), "--resume", str(c4_run))
    assert result.returncode == 2
    assert "--resume: this run folder was made from different scenario settings" in error_line(result.stderr)


def test_resume_of_weights_only_checkpoint_exits_2(tmp_path):
    from apps.game_ai.connect_four import ConnectFourNet
    from shared.scenario import load_scenario

    settings = load_scenario(C4).settings
    net = ConnectFourNet(tuple(settings.hidden_sizes), settings.torso, settings.channels, settings.features)
    run_dir = tmp_path / "weights_only"
    save_policy(run_dir / "checkpoints" / "latest", net, {"scenario": "connect_four_selfplay"})
    result = scenariolab("run", C4, "--budget", "smoke", "--out", str(tmp_path), "--resume", str(run_dir))
    assert result.returncode == 2
    assert "latest.json: resumable: this checkpoint contains weights only" in error_line(result.stderr)


@pytest.mark.slow
def test_pistonball_cli_resumes_to_larger_budget(tmp_path):
    run_dir, before, state_before = smoke_run(tmp_path, PISTONBALL, "pistonball_ppo", PISTONBALL_SETTINGS)
    # 4 envs x 64 steps per update; smoke is 512 steps.
    assert (before["global_step"], before["updates"]) == (512, 2)
    # 10 pistons x 256 steps = 2560 rows, 4 epochs x 4 minibatches per update.
    assert adam_steps(state_before) == {2 * 16}

    second = scenariolab("run", PISTONBALL, "--budget", "default", "--out", str(tmp_path), "--no-progress", "--resume", *PISTONBALL_SETTINGS)
    assert second.returncode == 0, second.stderr
    after, state_after = run_state(run_dir / "checkpoints" / "latest")
    assert (after["global_step"], after["updates"]) == (1536, 6)
    assert adam_steps(state_after) == {6 * 16}
    # Episodes of 40 cycles in 4 envs: 4 started at the start, 4 more after each 40 steps, 4 again at the resume.
    assert state_before["counters"]["episodes_started"] == 4 + 4 * (512 // 4 // 40)
    assert state_after["counters"]["episodes_started"] > state_before["counters"]["episodes_started"]
    steps = [json.loads(line)["global_step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [256, 512, 768, 1024, 1280, 1536]


def test_pong_pool_travels_in_the_learner_checkpoint(tmp_path):
    settings = PongSelfPlaySettings(snapshot_interval=10, pool_size=2)
    env = PongSelfPlayEnv(settings, max_episode_steps=40)
    ppo = pool_carrying(get_agent_class("ppo"))
    config = ppo.Config.model_validate({"num_steps": 8})
    pool = OpponentPool(settings)
    learner = ppo(env.observation_space, env.action_space, config, num_envs=1)
    pool.attach(learner)
    learner.opponent_pool = pool
    for _ in range(25):
        pool.count_step()
        with torch.no_grad():
            for parameter in learner.modules()["policy"].parameters():
                parameter.add_(0.01)
    assert len(pool.snapshots) == 2
    assert pool.steps == 25
    save_agent(learner, tmp_path / "learner")

    fresh_pool = OpponentPool(settings)
    fresh = ppo(env.observation_space, env.action_space, config, num_envs=1, seed=9)
    fresh_pool.attach(fresh)
    fresh.opponent_pool = fresh_pool
    load_agent(fresh, tmp_path / "learner")
    assert fresh_pool.steps == 25
    assert len(fresh_pool.snapshots) == 2
    for ours, theirs in zip(fresh_pool.snapshots, pool.snapshots):
        for name in theirs:
            for key, value in theirs[name].items():
                assert torch.equal(ours[name][key], value)
    # The snapshots are the learner after 10 and 20 steps, not its current weights.
    current = learner.modules()["policy"].state_dict()
    for snapshot in fresh_pool.snapshots:
        assert any(not torch.equal(value, current[key]) for key, value in snapshot["policy"].items())
    env.close()
