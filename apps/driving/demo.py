"""Demo API: play one highway episode with a chosen agent and perturbations, yielding frames and a panel.

:func:`play_episode` needs no training: the learned agents load the checkpoints shipped beside the
scenarios (``checkpoint_path``). Each step yields the rendered frame (``rgb_array``, H x W x 3 uint8)
and a panel of simulator quantities for display.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np

from apps.driving.baselines import idm_policy, random_policy
from apps.driving.envs import KIND, with_ego_controller
from shared.errors import ScenarioError

DemoAgent = Literal["shielded_ppo", "ppo_lagrangian", "ppo", "idm", "random"]

SCENARIOS_DIR = Path(__file__).resolve().parents[2] / "scenarios" / "driving"

# Scenario file of each demo agent. IDM and random drive the plain PPO scenario (no shield).
DEMO_SCENARIOS: dict[str, str] = {
    "shielded_ppo": "highway_safe_ppo.yaml",
    "ppo_lagrangian": "highway_ppo_lagrangian.yaml",
    "ppo": "highway_ppo.yaml",
    "idm": "highway_ppo.yaml",
    "random": "highway_ppo.yaml",
}


def play_episode(
    agent: DemoAgent,
    perturb: dict[str, float] | None = None,
    seed: int = 0,
    max_steps: int | None = None,
) -> Iterator[tuple[np.ndarray, dict[str, Any]]]:
    """Play one episode and yield ``(frame, panel)`` after the reset and after every step.

    The panel contains ``step``, ``speed`` (m/s), ``ttc`` (s, capped at 10), ``headway`` (s), ``cost``
    (this step), ``episode_cost``, ``shield_interventions``, ``action``, ``reward``, ``episode_return``
    and ``crashed``. Raises ScenarioError for an unknown agent or an invalid perturbation.
    """
    from shared.scenario import load_scenario

    if agent not in DEMO_SCENARIOS:
        raise ScenarioError(f"agent: unknown value {agent!r}; allowed: {', '.join(DEMO_SCENARIOS)}")
    loaded = load_scenario(str(SCENARIOS_DIR / DEMO_SCENARIOS[agent]))
    if agent == "idm":
        loaded = with_ego_controller(loaded, "idm")
    perturb = dict(perturb or {})
    KIND.validate_driving_perturb(loaded, perturb, "demo", "perturb")
    env = KIND.make_env(loaded, seed=seed, render_mode="rgb_array", perturb=perturb, training=False)
    try:
        policy = _policy(agent, loaded, env, seed)
        obs, info = env.reset(seed=seed)
        panel = _panel(0, info, None, 0.0, 0.0, 0.0)
        yield env.render(), panel
        episode_return = episode_cost = 0.0
        step = 0
        while True:
            action = policy(obs)
            obs, reward, terminated, truncated, info = env.step(action)
            step += 1
            episode_return += float(reward)
            episode_cost += float(info.get("cost", 0.0))
            yield env.render(), _panel(step, info, action, float(reward), episode_return, episode_cost)
            if terminated or truncated or (max_steps is not None and step >= max_steps):
                break
    finally:
        env.close()


def _policy(agent: str, loaded: Any, env: Any, seed: int) -> Any:
    if agent == "idm":
        return idm_policy(env.action_space)
    if agent == "random":
        return random_policy(env.action_space, seed)
    from shared.checkpoints import load_agent
    from shared.evaluation import agent_policy

    learner = KIND.build_agent(loaded, env, 0, seed)
    load_agent(learner, loaded.resolve_path(loaded.scenario.checkpoint_path), weights_only=True)
    return agent_policy(learner, deterministic=True)


def _panel(step: int, info: dict[str, Any], action: Any, reward: float, episode_return: float, episode_cost: float) -> dict[str, Any]:
    return {
        "step": step,
        "speed": float(info.get("ego_speed", 0.0)),
        "ttc": float(info.get("ttc", 0.0)),
        "headway": float(info.get("headway", 0.0)),
        "cost": float(info.get("cost", 0.0)),
        "episode_cost": episode_cost,
        "shield_interventions": int(info.get("shield_interventions", 0)),
        "shield_intervened": bool(info.get("shield_intervened", False)),
        "action": None if action is None else np.asarray(action).tolist(),
        "reward": reward,
        "episode_return": episode_return,
        "crashed": bool(info.get("ego_crashed", False)),
    }
