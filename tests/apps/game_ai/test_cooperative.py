"""Cooperative PPO: the Pistonball vector adapter, agent slots with departures, and PPO on the slots."""

from __future__ import annotations

import functools

import gymnasium
import numpy as np
import pytest
import torch
from pettingzoo import ParallelEnv
from pettingzoo.test import parallel_api_test

from apps.game_ai.cooperative import (
    CooperativeSettings,
    PistonballVectorEnv,
    SharedPPOTrainer,
    SlotCollector,
    run_episodes,
)


class RelayEnv(ParallelEnv):
    """Three runners; ``runner_2`` terminates after step 2 and the rest are truncated after step 5.

    Observation: ``[step / 5, slot]``. Reward: 1 per present runner per step.
    """

    metadata = {"name": "relay_v0", "render_modes": [], "is_parallelizable": True}

    def __init__(self) -> None:
        self.possible_agents = ["runner_0", "runner_1", "runner_2"]
        self.agents: list[str] = []
        self.steps = 0

    @functools.lru_cache(maxsize=None)
    def observation_space(self, agent: str) -> gymnasium.spaces.Space:
        return gymnasium.spaces.Box(-10.0, 10.0, (2,), np.float32)

    @functools.lru_cache(maxsize=None)
    def action_space(self, agent: str) -> gymnasium.spaces.Space:
        return gymnasium.spaces.Discrete(2)

    def _obs(self) -> dict[str, np.ndarray]:
        return {agent: np.array([self.steps / 5, self.possible_agents.index(agent)], dtype=np.float32) for agent in self.agents}

    def reset(self, seed=None, options=None):
        self.agents = list(self.possible_agents)
        self.steps = 0
        return self._obs(), {agent: {} for agent in self.agents}

    def step(self, actions):
        assert set(actions) == set(self.agents), f"actions for {sorted(actions)}, present {self.agents}"
        self.steps += 1
        acting = list(self.agents)
        rewards = {agent: 1.0 for agent in acting}
        terminations = {agent: agent == "runner_2" and self.steps >= 2 for agent in acting}
        truncations = {agent: self.steps >= 5 and not terminations[agent] for agent in acting}
        observations = self._obs()
        infos = {agent: {} for agent in acting}
        self.agents = [agent for agent in acting if not (terminations[agent] or truncations[agent])]
        return observations, rewards, terminations, truncations, infos


def test_relay_env_passes_parallel_api_test():
    parallel_api_test(RelayEnv(), num_cycles=20)


def test_pistonball_vector_passes_parallel_api_test():
    parallel_api_test(PistonballVectorEnv(n_pistons=4, max_cycles=30), num_cycles=40)


def test_pistonball_vector_observation_layout():
    env = PistonballVectorEnv(n_pistons=3)
    observations, _ = env.reset(seed=0)
    assert env.observation_space("piston_0").shape == (9,)
    # Edge pistons have one neighbour, the middle one two.
    assert observations["piston_0"][3:5].tolist() == [0.0, 1.0]
    assert observations["piston_1"][3:5].tolist() == [1.0, 1.0]
    assert observations["piston_2"][3:5].tolist() == [1.0, 0.0]
    # The ball's horizontal offset drops by one piston width from one piston to the next.
    offsets = [observations[f"piston_{i}"][5] for i in range(3)]
    assert offsets[0] - offsets[1] == pytest.approx(1.0)
    assert offsets[1] - offsets[2] == pytest.approx(1.0)
    env.close()


def test_pistonball_vector_rewards_are_shared():
    env = PistonballVectorEnv(n_pistons=4, max_cycles=10)
    env.reset(seed=1)
    _, rewards, _, truncations, _ = env.step({agent: 2 for agent in env.agents})
    assert len(set(rewards.values())) == 1
    steps = 1
    while env.agents:
        _, rewards, terminations, truncations, _ = env.step({agent: 1 for agent in env.agents})
        steps += 1
    assert steps <= 10
    assert all(truncations.values()) or all(terminations.values())


def test_slots_pad_and_mask_departed_agent():
    collector = SlotCollector(RelayEnv, num_envs=1, seed=0)
    zero_value = lambda obs, slots: np.zeros(len(slots))  # noqa: E731
    valid_per_step = []
    for step in range(1, 6):
        result = collector.step(np.zeros((1, 3), dtype=np.int64), zero_value)
        valid_per_step.append(result["valid"][0].tolist())
        if step == 2:
            assert result["ended"][0].tolist() == [False, False, True]
            # The departed runner's slot is padded with zeros until the env resets.
            assert collector.obs[0, 2].tolist() == [0.0, 0.0]
            assert collector.present[0].tolist() == [True, True, False]
    assert valid_per_step == [[True, True, True], [True, True, True], [True, True, False], [True, True, False], [True, True, False]]
    # After step 5 every runner is gone, so the env reset and all slots are present again.
    assert collector.present[0].tolist() == [True, True, True]
    assert collector.finished == [(5.0, 5)]


def test_truncated_agents_get_bootstrap_in_reward():
    collector = SlotCollector(RelayEnv, num_envs=1, seed=0)
    seen = {}

    def final_values(obs, slots):
        seen["slots"] = slots.tolist()
        return np.full(len(slots), 0.5)

    for _ in range(4):
        collector.step(np.zeros((1, 3), dtype=np.int64), final_values)
    result = collector.step(np.zeros((1, 3), dtype=np.int64), final_values)
    assert seen["slots"] == [0, 1]
    assert result["rewards"][0].tolist() == [1.5, 1.5, 0.0]


def test_shared_ppo_rollout_drops_absent_transitions():
    collector = SlotCollector(RelayEnv, num_envs=2, seed=0)
    trainer = SharedPPOTrainer(collector, CooperativeSettings(rollout_steps=10, hidden_sizes=[8]), total_steps=100, seed=0)
    batch = trainer.collect()
    # Per env and 5-step episode: runners 0 and 1 act 5 times, runner 2 twice; 10 steps are 2 episodes.
    assert batch["actions"].shape == (2 * 2 * (5 + 5 + 2),)
    assert np.bincount(batch["slots"]).tolist() == [20, 20, 8]
    tags = trainer.update(batch)
    assert np.isfinite(tags["losses/value_loss"])
    collector.close()


def test_shared_ppo_with_agent_ids_runs():
    collector = SlotCollector(RelayEnv, num_envs=1, seed=0)
    trainer = SharedPPOTrainer(collector, CooperativeSettings(rollout_steps=6, hidden_sizes=[8], agent_id_input=True), total_steps=100, seed=0)
    tags = trainer.update(trainer.collect())
    assert np.isfinite(tags["losses/policy_loss"])
    assert trainer.net.actor.net[0].in_features == 2 + 3


def test_run_episodes_reports_team_return():
    results = run_episodes(RelayEnv, lambda obs, present: np.zeros(len(obs), dtype=np.int64), episodes=2, seeds=[0])
    assert results == [{"return_mean": 5.0, "episode_length_mean": 5.0}] * 2


@pytest.mark.slow
def test_shared_ppo_learns_pistonball(one_torch_thread):
    """A short run moves the ball left more than the random policy does (mean over 4 episodes)."""
    torch.manual_seed(0)
    make_env = lambda: PistonballVectorEnv(n_pistons=5, max_cycles=60)  # noqa: E731
    collector = SlotCollector(make_env, num_envs=2, seed=0)
    trainer = SharedPPOTrainer(collector, CooperativeSettings(rollout_steps=64, learning_rate=1e-3), total_steps=4096, seed=0)
    while trainer.global_step < trainer.total_steps:
        trainer.update(trainer.collect())
    collector.close()

    def greedy(obs, present):
        with torch.no_grad():
            return trainer.net(torch.as_tensor(obs[None]))[0][0].argmax(-1).numpy()

    rng = np.random.default_rng(0)
    trained = np.mean([r["return_mean"] for r in run_episodes(make_env, greedy, 2, [100, 101])])
    random = np.mean([r["return_mean"] for r in run_episodes(make_env, lambda obs, present: rng.integers(0, 3, len(obs)), 2, [100, 101])])
    assert trained > random + 10.0
