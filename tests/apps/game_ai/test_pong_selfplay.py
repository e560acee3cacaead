"""Two-player Pong: the PettingZoo adapter's API tests, the self-play env, the opponent pool, a CLI smoke run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from pettingzoo.test import parallel_api_test

from apps.game_ai.pong_selfplay import (
    AtariParallelPreprocessing,
    OpponentPool,
    PongSelfPlayEnv,
    PongSelfPlayKind,
    PongSelfPlaySettings,
    SelfPlayEpisodeTracker,
    make_pong_parallel_env,
)
from shared.agents import get_agent_class


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Batch-1 CNN forwards run faster on one thread than on two contended ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_parallel_preprocessing_passes_api_test():
    env = AtariParallelPreprocessing(make_pong_parallel_env(), mirror_agents=("second_0",))
    parallel_api_test(env, num_cycles=300)
    env.close()


def test_parallel_preprocessing_spaces_and_mirror():
    env = AtariParallelPreprocessing(make_pong_parallel_env(), mirror_agents=("second_0",))
    observations, infos = env.reset(seed=0)
    assert set(observations) == {"first_0", "second_0"}
    assert set(infos) == {"first_0", "second_0"}
    for agent in env.possible_agents:
        assert env.observation_space(agent).shape == (4, 84, 84)
        assert env.action_space(agent) == gym.spaces.Discrete(6)
    for _ in range(6):
        observations, rewards, terminations, truncations, _ = env.step({"first_0": 2, "second_0": 3})
    first, second = observations["first_0"], observations["second_0"]
    assert first.dtype == np.uint8
    np.testing.assert_array_equal(second, first[:, :, ::-1])
    assert not np.array_equal(first[0], first[3]), "the paddles moved, so the oldest and newest frames differ"
    env.close()


def test_parallel_preprocessing_ends_both_agents_at_frame_limit():
    env = AtariParallelPreprocessing(make_pong_parallel_env(max_cycles=100), noop_max=0)
    env.reset(seed=0)
    steps = 0
    while env.agents:
        _, _, terminations, truncations, _ = env.step({agent: 0 for agent in env.agents})
        steps += 1
    assert steps == 25, "100 frames at 4 frames per step"
    assert truncations == {"first_0": True, "second_0": True}
    assert terminations == {"first_0": False, "second_0": False}


def test_selfplay_env_passes_check_env():
    env = PongSelfPlayEnv(PongSelfPlaySettings(), max_episode_steps=50)
    check_env(env, skip_render_check=True)
    obs, info = env.reset(seed=4)
    assert obs.shape == (4, 84, 84)
    assert info["learner"] in ("first_0", "second_0")
    for _ in range(50):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        if terminated or truncated:
            break
    assert truncated
    assert info["win"] in (0.0, 0.5, 1.0)
    env.close()


def test_opponent_pool_snapshots_and_draws():
    settings = PongSelfPlaySettings(snapshot_interval=10, pool_size=3, latest_probability=1.0)
    pool = OpponentPool(settings)
    env = PongSelfPlayEnv(settings, pool, max_episode_steps=40)
    assert pool.draw(np.random.default_rng(0)) is None

    ppo = get_agent_class("ppo")
    config = ppo.Config.model_validate({"num_steps": 8})
    learner = ppo(env.observation_space, env.action_space, config, num_envs=1)
    pool.attach(learner)
    assert len(pool.snapshots) == 1

    env.reset(seed=0)
    for _ in range(35):
        env.step(env.action_space.sample())
    assert len(pool.snapshots) == 3, "a snapshot at attach and at steps 10, 20, 30 with room for 3"
    drawn = pool.draw(np.random.default_rng(0))
    assert drawn is pool.snapshots[-1]
    # The next game's opponent acts with the newest snapshot's weights.
    env.reset(seed=1)
    opponent = env._opponent_actor
    assert opponent is not None
    for name, module in opponent.modules().items():
        for key, value in module.state_dict().items():
            assert np.array_equal(value.numpy(), pool.snapshots[-1][name][key].numpy())
    env.close()


@pytest.mark.parametrize("side", ["first_0", "second_0"])
def test_heuristic_opponent_beats_random(side):
    settings = PongSelfPlaySettings(learner_side=side)
    env = PongSelfPlayEnv(settings, max_episode_steps=800, fixed_opponent="heuristic")
    tracker = SelfPlayEpisodeTracker("heuristic")
    obs, info = env.reset(seed=2)
    env.action_space.seed(2)  # the random learner's moves are part of the fixture, so they are seeded too
    tracker.reset(env, obs, info)
    while True:
        action = env.action_space.sample()
        obs, reward, terminated, truncated, info = env.step(action)
        tracker.step(env, action, reward, terminated, truncated, info)
        if terminated or truncated:
            break
    result = tracker.result()
    assert info["opponent"] == "heuristic"
    assert result["win_rate_vs_heuristic"] == 0.0
    assert result["return_mean"] <= -3, "the heuristic returns the ball and scores several points in 800 steps"
    env.close()


def test_kind_tracker_names_metric_by_opponent(repo_root):
    from shared.scenario import load_scenario

    loaded = load_scenario(str(repo_root / "scenarios/game_ai/pong_selfplay.yaml"), ["settings.eval_opponent=heuristic"])
    tracker = PongSelfPlayKind().episode_tracker(loaded)
    env = PongSelfPlayKind().make_env(loaded, training=False)
    assert env.fixed_opponent == "heuristic"
    tracker.reset(env, None, {})
    assert "win_rate_vs_heuristic" in tracker.result()
    env.close()


@pytest.mark.slow
def test_pong_selfplay_smoke_run(tmp_path):
    result = subprocess.run(
        [
            sys.executable, "-m", "shared.cli", "run", "pong_selfplay", "--budget", "smoke", "--out", str(tmp_path), "--no-progress",
            "--set", "evaluation.episodes=1", "--set", "evaluation.seeds=[10000]", "--set", "env.max_episode_steps=100",
            "--set", "settings.snapshot_interval=128", "--set", "torch_threads=1",
            # Two envs and one 256-step rollout keep the smoke run to seconds on two cores.
            "--set", "env.num_envs=2", "--set", "budget.smoke=256",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ),
    )
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "pong_selfplay").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["agent"] == "ppo"
    assert {"return_mean", "return_iqm", "episode_length_mean", "win_rate_vs_random"} <= set(metrics["metrics"])
    assert metrics["metrics"]["win_rate_vs_random"] in (0.0, 0.5, 1.0)
    assert metrics["metrics"]["episode_length_mean"] == 100
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("losses/policy_loss" in row for row in logged)
    assert (run_dir / "checkpoints" / "latest.safetensors").exists()


def test_record_selfplay_episode(tmp_path, repo_root):
    import imageio.v2 as imageio

    from apps.game_ai.atari import record_episode
    from shared.scenario import load_scenario

    loaded = load_scenario(str(repo_root / "scenarios/game_ai/pong_selfplay.yaml"), ["env.max_episode_steps=20"])
    video = record_episode(loaded, lambda obs: 2, tmp_path / "pong.mp4", seed=0)
    reader = imageio.get_reader(str(video))
    frames = reader.count_frames()
    codec = reader.get_meta_data()["codec"]
    reader.close()
    assert codec == "h264"
    assert 20 <= frames <= 21, "the reset frame plus one per step, of which moviepy may drop the last"
