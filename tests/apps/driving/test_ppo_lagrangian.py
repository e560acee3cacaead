"""The Lagrange multiplier of PPO-Lagrangian rises while the cost exceeds the limit and falls below it."""

from __future__ import annotations

import pytest

from shared.agents.ppo_lagrangian import LagrangeMultiplier


def test_multiplier_rises_then_falls():
    multiplier = LagrangeMultiplier(init=0.001, lr=0.035)
    values = [multiplier.value]
    for _ in range(20):
        values.append(multiplier.update(episode_cost=3.0, cost_limit=1.0))
    assert all(b > a for a, b in zip(values, values[1:]))
    # Adam's first steps have size close to the learning rate.
    assert values[1] == pytest.approx(0.001 + 0.035, rel=0.01)
    peak = values[-1]
    falling = [multiplier.update(episode_cost=0.0, cost_limit=1.0) for _ in range(30)]
    # Adam's first moment (beta1 = 0.9) carries the ascent on for about 9 steps after the sign flips;
    # from then on every step lowers lambda.
    tail = falling[10:]
    assert all(b < a for a, b in zip(tail, tail[1:]))
    assert falling[-1] < peak - 0.1


def test_multiplier_projected_to_bounds():
    multiplier = LagrangeMultiplier(init=0.001, lr=0.5, upper_bound=1.0)
    for _ in range(10):
        multiplier.update(episode_cost=0.0, cost_limit=5.0)
    assert multiplier.value == 0.0
    for _ in range(20):
        multiplier.update(episode_cost=10.0, cost_limit=0.0)
    assert multiplier.value == 1.0


def test_agent_logs_multiplier_on_driving_env():
    import gymnasium as gym
    import highway_env  # noqa: F401  (registers the env ids)
    import numpy as np

    from apps.driving.costs import SafetyCostWrapper
    from shared.agents.ppo_lagrangian import PPOLagrangian, PPOLagrangianConfig
    from shared.rollout import VectorCollector

    def make():
        return SafetyCostWrapper(gym.make("highway-fast-v0", config={"vehicles_count": 8, "duration": 8}))

    envs = gym.vector.SyncVectorEnv([make, make], autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
    config = PPOLagrangianConfig(num_steps=16, num_minibatches=2, update_epochs=1, cost_limit=0.0, hidden_sizes=[16])
    agent = PPOLagrangian(envs.single_observation_space, envs.single_action_space, config, num_envs=2, total_steps=64, seed=0)
    collector = VectorCollector(envs, seed=0)
    first = agent.train_iteration(collector)
    second = agent.train_iteration(collector)
    envs.close()
    assert "safety/lagrange_multiplier" in first
    assert np.isfinite(first["losses/cost_value_loss"])
    # With a cost limit of 0 the multiplier can only rise or stay (when no cost was seen yet).
    assert second["safety/lagrange_multiplier"] >= first["safety/lagrange_multiplier"]
