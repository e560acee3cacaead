"""Atari env factory and wrappers: frame stack, raw game score, life-loss ends, no-op resets."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from apps.game_ai.atari import AtariKind, AtariSettings, make_base_env, wrap_atari
from shared.errors import ScenarioError
from shared.rollout import VectorCollector
from shared.scenario import load_scenario


class RawScore(gym.Wrapper):
    """Test probe on the raw ALE env: sums every emulator frame's reward and counts resets and game ends."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.total = 0.0
        self.resets = 0
        self.game_ends = 0

    def reset(self, **kwargs: Any):
        self.total = 0.0
        self.resets += 1
        return self.env.reset(**kwargs)

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.total += float(reward)
        self.game_ends += int(terminated or truncated)
        return obs, reward, terminated, truncated, info


def breakout(training: bool, settings: AtariSettings = AtariSettings(), **config: Any) -> gym.Env:
    return wrap_atari(make_base_env("ALE/Breakout-v5", {"repeat_action_probability": 0.0, **config}), settings, training=training)


def test_frame_stack_shape_and_order():
    stacked = breakout(training=False)
    single = breakout(training=False, settings=AtariSettings(frame_stack=1))
    assert stacked.observation_space.shape == (4, 84, 84)
    assert stacked.observation_space.dtype == np.uint8

    obs, _ = stacked.reset(seed=7)
    frame, _ = single.reset(seed=7)
    assert obs.shape == (4, 84, 84)
    assert obs.dtype == np.uint8
    # After reset every slot contains the first frame.
    for slot in range(4):
        np.testing.assert_array_equal(obs[slot], frame[0])

    frames = [frame[0]]
    rng = np.random.default_rng(0)
    for _ in range(12):
        action = int(rng.integers(stacked.action_space.n))
        obs, *_ = stacked.step(action)
        frame, *_ = single.step(action)
        frames.append(frame[0])
    # Oldest first: slot i is the frame from 3 - i steps ago.
    for slot in range(4):
        np.testing.assert_array_equal(obs[slot], frames[-4 + slot])
    assert not np.array_equal(obs[0], obs[3]), "the ball moved, so the oldest and newest frames differ"


def test_logged_return_is_raw_game_score():
    """The collector logs the whole game's unclipped score although training ends episodes per life."""
    probes: list[RawScore] = []

    def make() -> gym.Env:
        probe = RawScore(make_base_env("ALE/Breakout-v5", {"repeat_action_probability": 0.0}))
        probes.append(probe)
        return wrap_atari(probe, training=True)

    envs = gym.vector.SyncVectorEnv([make], autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
    collector = VectorCollector(envs, seed=3)
    rng = np.random.default_rng(3)
    life_ends = 0
    clipped_sum = 0.0
    game_record = None
    for _ in range(5000):
        batch = collector.step(rng.integers(4, size=1))
        if batch.valid[0]:
            assert -1.0 <= batch.rewards[0] <= 1.0
            clipped_sum += float(batch.rewards[0])
            life_ends += int(batch.terminated[0])
        if "episode_return" in batch.infos:
            game_record = collector.pop_episodes()[-1]
            break
    envs.close()

    assert game_record is not None, "a random Breakout game ends within 5000 steps"
    assert life_ends == 5, "Breakout has 5 lives, and training ends an episode at each"
    assert game_record.episode_return == probes[0].total
    assert game_record.episode_return == float(batch.infos["episode_return"][0])
    assert clipped_sum <= game_record.episode_return
    assert game_record.length == int(batch.infos["episode_length"][0])


def test_evaluation_env_plays_whole_game():
    env = breakout(training=False)
    env.reset(seed=1)
    rng = np.random.default_rng(1)
    for _ in range(5000):
        _, reward, terminated, truncated, info = env.step(int(rng.integers(4)))
        assert reward == int(reward), "evaluation rewards are raw, unclipped game points"
        assert reward >= 0
        if terminated or truncated:
            break
    assert terminated
    assert env.unwrapped.ale.lives() == 0
    assert "episode_return" in info


def test_evaluation_fires_after_life_loss():
    """A policy that never presses FIRE still sees the ball launched at the start of every life."""
    env = breakout(training=False)
    env.reset(seed=0)
    lives = [env.unwrapped.ale.lives()]
    for _ in range(1000):
        _, _, terminated, truncated, info = env.step(0)
        lives.append(env.unwrapped.ale.lives())
        if terminated or truncated:
            break
    assert terminated, "the NOOP policy misses every ball, so the game ends well before 1000 steps"
    assert lives[0] == 5
    assert sorted(set(lives), reverse=True) == [5, 4, 3, 2, 1, 0]
    assert info["episode_return"] == 0.0


def test_training_env_ends_episode_at_life_loss():
    env = breakout(training=True)
    env.reset(seed=1)
    rng = np.random.default_rng(1)
    for _ in range(5000):
        _, _, terminated, truncated, info = env.step(int(rng.integers(4)))
        if terminated or truncated:
            break
    assert terminated
    assert env.unwrapped.ale.lives() == 4
    assert "episode_return" not in info
    # The next reset continues the same game instead of restarting it.
    frame_before = env.unwrapped.ale.getEpisodeFrameNumber()
    env.reset()
    assert env.unwrapped.ale.lives() == 4
    assert env.unwrapped.ale.getEpisodeFrameNumber() > frame_before


def test_game_ending_in_reset_noops():
    """A 20-frame game limit ends some games inside the up-to-30 reset no-ops; nothing may break."""
    settings = AtariSettings(noop_max=30)
    probe = RawScore(make_base_env("ALE/Breakout-v5", {"repeat_action_probability": 0.0, "max_num_frames_per_episode": 20}))
    env = wrap_atari(probe, settings, training=False)
    ended_in_noops = 0
    for seed in range(10):
        before = probe.resets
        obs, _ = env.reset(seed=seed)
        ended_in_noops += int(probe.resets - before > 1)
        assert obs.shape == (4, 84, 84)
        for _ in range(10):
            obs, _, terminated, truncated, info = env.step(0)
            assert obs.shape == (4, 84, 84)
            if terminated or truncated:
                assert "episode_return" in info
                break
    assert ended_in_noops > 0

    def make() -> gym.Env:
        base = make_base_env("ALE/Breakout-v5", {"repeat_action_probability": 0.0, "max_num_frames_per_episode": 20})
        return wrap_atari(base, settings, training=True)

    envs = gym.vector.SyncVectorEnv([make, make], autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
    collector = VectorCollector(envs, seed=0)
    rng = np.random.default_rng(0)
    finished = []
    for _ in range(60):
        batch = collector.step(rng.integers(4, size=2))
        assert batch.next_obs.shape == (2, 4, 84, 84)
        finished += collector.pop_episodes()
    envs.close()
    assert finished, "with a 20-frame limit games end every few steps"
    assert all(record.length >= 1 for record in finished)


def test_pong_observation_and_actions():
    env = wrap_atari(make_base_env("ALE/Pong-v5", {}), training=True)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4, 84, 84)
    assert env.action_space == gym.spaces.Discrete(6)
    assert env.unwrapped.get_action_meanings()[:2] == ["NOOP", "FIRE"]


def test_kind_rejects_unknown_game(repo_root):
    with pytest.raises(ScenarioError, match=r"env\.id: unknown value 'ALE/Pongg-v5'.*Did you mean 'ALE/Pong-v5'"):
        load_scenario(str(repo_root / "scenarios/game_ai/pong_ppo.yaml"), ["env.id=ALE/Pongg-v5"])


def test_kind_rejects_frameskip_twice(repo_root):
    with pytest.raises(ScenarioError, match=r"env\.config\.frameskip: is 4 while settings\.frame_skip is 4"):
        load_scenario(str(repo_root / "scenarios/game_ai/pong_ppo.yaml"), ["env.config.frameskip=4"])


def test_kind_rejects_dqn_on_continuous_actions(repo_root):
    with pytest.raises(ScenarioError, match=r"agent\.name: dqn needs discrete actions"):
        load_scenario(str(repo_root / "scenarios/game_ai/pong_dqn.yaml"), ["env.config.continuous=true"])


def test_kind_perturbs_sticky_actions(repo_root):
    loaded = load_scenario(str(repo_root / "scenarios/game_ai/pong_ppo.yaml"))
    kind = AtariKind()
    default = kind.make_env(loaded, training=False)
    assert default.unwrapped.ale.getFloat("repeat_action_probability") == pytest.approx(0.25)
    perturbed = kind.make_env(loaded, perturb={"sticky_actions": 0.0}, training=False)
    assert perturbed.unwrapped.ale.getFloat("repeat_action_probability") == 0.0
    with pytest.raises(ScenarioError, match=r"perturb\.sticky_actions: level 2\.0 is out of range"):
        kind.validate_perturb({"sticky_actions": 2.0}, "test")
