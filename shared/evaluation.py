"""Evaluation over episodes x seeds with a per-episode metric tracker, and a random-policy baseline."""

from __future__ import annotations

import copy
from typing import Any, Callable

import gymnasium as gym
import numpy as np

from shared.kinds import EpisodeTracker
from shared.stats import aggregate

Policy = Callable[[Any], Any]


def evaluate_policy(
    make_env: Callable[[int], gym.Env],
    policy: Policy,
    tracker_factory: Callable[[], EpisodeTracker],
    episodes: int,
    seeds: list[int],
    max_steps: int | None = None,
) -> list[dict[str, float]]:
    """Run ``episodes`` episodes on each seed and return one metrics dict per episode.

    Each seed gets a fresh env from ``make_env(seed)``; its first reset uses the seed and later
    resets continue the env's own generator, so the episodes of one seed differ but are repeatable.
    """
    results: list[dict[str, float]] = []
    for seed in seeds:
        env = make_env(seed)
        try:
            for episode in range(episodes):
                obs, info = env.reset(seed=seed if episode == 0 else None)
                tracker = tracker_factory()
                tracker.reset(env, obs, info)
                steps = 0
                while True:
                    action = policy(obs)
                    obs, reward, terminated, truncated, info = env.step(action)
                    tracker.step(env, action, float(reward), bool(terminated), bool(truncated), info)
                    steps += 1
                    if terminated or truncated or (max_steps is not None and steps >= max_steps):
                        break
                results.append(tracker.result())
        finally:
            env.close()
    return results


def agent_policy(agent: Any, deterministic: bool) -> Policy:
    """Wrap a batched ``agent.act`` as a single-observation policy."""

    def act(obs: Any) -> Any:
        action = agent.act(np.asarray(obs)[None], deterministic=deterministic)[0]
        return action.item() if isinstance(action, np.ndarray) and action.ndim == 0 else action

    return act


def random_policy(action_space: gym.Space, seed: int) -> Policy:
    """Return a uniform random policy that samples from its own seeded copy of the action space."""
    space = copy.deepcopy(action_space)
    space.seed(seed)
    return lambda _obs: space.sample()


def summarize(episodes: list[dict[str, float]], samples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Aggregate per-episode metrics into ``{"metrics", "ci95", "episodes"}``."""
    metrics, ci95 = aggregate(episodes, samples=samples, seed=seed)
    return {"metrics": metrics, "ci95": ci95, "episodes": len(episodes)}
