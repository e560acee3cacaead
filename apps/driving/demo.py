"""Demo API: play one driving episode of a chosen scenario and agent, yielding rendered frames and a panel.

:func:`play_episode` needs no training: the learned agents load the checkpoints shipped beside the
scenarios (``checkpoint_path``). Each step yields the rendered frame (``rgb_array``, H x W x 3 uint8)
and a panel of simulator quantities for display.

The demo offers the scenarios in :data:`DEMO_SCENARIOS`. On each one, :func:`agent_choices` lists
the agents of :data:`DEMO_AGENTS`, each either with the scenario file it drives or with the reason
it is not available. It reads YAML only, so a page can draw its pickers without importing
highway-env.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np

from shared.errors import ScenarioError, located
from shared.scenario import read_with_extends

DemoAgent = Literal["shielded_ppo", "ppo_lagrangian", "ppo", "dqn", "idm", "random"]
DemoScenarioName = Literal["highway", "merge", "roundabout", "intersection", "racetrack"]

SCENARIOS_DIR = Path(__file__).resolve().parents[2] / "scenarios" / "driving"

# Every agent of the demo, in the order the page offers them.
DEMO_AGENTS: tuple[str, ...] = ("shielded_ppo", "ppo_lagrangian", "ppo", "dqn", "idm", "random")
# The learning algorithm of each learned agent, as the field writes it.
ALGORITHMS: dict[str, str] = {"shielded_ppo": "PPO-Lagrangian", "ppo_lagrangian": "PPO-Lagrangian", "ppo": "PPO", "dqn": "DQN"}


@dataclass(frozen=True)
class DemoScenario:
    """One driving scenario of the demo: the scenario file of each learned agent and the file the rule agents drive."""

    name: str
    learned: dict[str, str]
    rule_file: str


# The scenarios with shipped checkpoints under apps/driving/checkpoints. IDM/MOBIL and random drive
# ``rule_file``'s env; on highway that is the unshielded PPO scenario, as in the shipped benchmark.
DEMO_SCENARIOS: dict[str, DemoScenario] = {
    "highway": DemoScenario(
        "highway",
        {
            "shielded_ppo": "highway_safe_ppo.yaml",
            "ppo_lagrangian": "highway_ppo_lagrangian.yaml",
            "ppo": "highway_ppo.yaml",
            "dqn": "highway_dqn.yaml",
        },
        "highway_ppo.yaml",
    ),
    "merge": DemoScenario("merge", {"ppo": "merge_ppo.yaml"}, "merge_ppo.yaml"),
    "roundabout": DemoScenario("roundabout", {"ppo": "roundabout_ppo.yaml"}, "roundabout_ppo.yaml"),
    "intersection": DemoScenario("intersection", {"ppo": "intersection_ppo.yaml"}, "intersection_ppo.yaml"),
    "racetrack": DemoScenario("racetrack", {"ppo": "racetrack_ppo.yaml"}, "racetrack_ppo.yaml"),
}


@dataclass(frozen=True)
class AgentChoice:
    """One agent on one demo scenario: the scenario file it drives, or why it is not available.

    ``unavailable`` is None when the agent can drive, and otherwise one of:

    * ``"not_shipped"``: no checkpoint for this agent on this scenario ships with ScenarioLab.
    * ``"checkpoint_missing"``: the scenario file names a checkpoint whose ``.safetensors`` or
      ``.json`` file is not on disk.
    * ``"needs_meta_actions"``: IDM/MOBIL on an env without discrete meta-actions. highway-env's
      IDMVehicle takes over a lane-following ego vehicle, and racetrack's steering ego is not one.
    """

    scenario: str
    agent: str
    scenario_file: Path | None
    env_id: str | None
    shield: bool
    unavailable: Literal["not_shipped", "checkpoint_missing", "needs_meta_actions"] | None = None

    @property
    def available(self) -> bool:
        return self.unavailable is None


def _checkpoint_files(path: Path, raw: dict[str, Any]) -> list[Path]:
    """Return the two files of the checkpoint a scenario names (empty when it names none)."""
    relative = raw.get("checkpoint_path")
    if not isinstance(relative, str):
        return []
    stem = (path.parent / relative).resolve()
    return [stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")]


def _shield_enabled(raw: dict[str, Any]) -> bool:
    settings = raw.get("settings")
    if not isinstance(settings, dict) or not isinstance(settings.get("shield"), dict):
        return False
    return bool(settings["shield"].get("enabled", False))


def _env_id(raw: dict[str, Any]) -> str | None:
    env = raw.get("env")
    return str(env["id"]) if isinstance(env, dict) and "id" in env else None


def _env_config_section(raw: dict[str, Any], section: str) -> dict[str, Any]:
    """Return the scenario's ``env.config.<section>`` over the env's default (importing highway-env only when the scenario leaves it out)."""
    env = raw.get("env") or {}
    written = (env.get("config") or {}).get(section)
    if isinstance(written, dict) and "type" in written:
        return written
    from apps.driving.envs import _env_class

    return {**_env_class(str(env["id"])).default_config()[section], **(written or {})}


def agent_choices(scenario: str) -> list[AgentChoice]:
    """Return every agent of :data:`DEMO_AGENTS` on ``scenario``, available or with the reason it is not.

    ``shield`` is True when the shield filters the agent's actions. A learned agent's scenario file
    sets it. It is False for IDM/MOBIL, which ignores the actions, and for random, which is an
    unprotected random driver. Raises ScenarioError for an unknown scenario.
    """
    demo = _demo_scenario(scenario)
    rule_path = SCENARIOS_DIR / demo.rule_file
    rule_raw = read_with_extends(rule_path)
    choices: list[AgentChoice] = []
    for agent in DEMO_AGENTS:
        if agent == "idm" and _env_config_section(rule_raw, "action").get("type") != "DiscreteMetaAction":
            choices.append(AgentChoice(scenario, agent, None, _env_id(rule_raw), shield=False, unavailable="needs_meta_actions"))
            continue
        if agent in ("idm", "random"):
            choices.append(AgentChoice(scenario, agent, rule_path, _env_id(rule_raw), shield=False))
            continue
        file = demo.learned.get(agent)
        if file is None:
            choices.append(AgentChoice(scenario, agent, None, None, shield=agent == "shielded_ppo", unavailable="not_shipped"))
            continue
        path = SCENARIOS_DIR / file
        raw = read_with_extends(path)
        files = _checkpoint_files(path, raw)
        missing = not files or not all(item.is_file() for item in files)
        choices.append(
            AgentChoice(scenario, agent, path, _env_id(raw), shield=_shield_enabled(raw), unavailable="checkpoint_missing" if missing else None)
        )
    return choices


def scenario_env_ids() -> dict[str, str | None]:
    """Return the highway-env id each demo scenario drives, read from its rule agents' scenario file."""
    return {name: _env_id(read_with_extends(SCENARIOS_DIR / demo.rule_file)) for name, demo in DEMO_SCENARIOS.items()}


def _demo_scenario(scenario: str) -> DemoScenario:
    if scenario not in DEMO_SCENARIOS:
        raise ScenarioError(located("demo", "scenario", f"unknown value {scenario!r}; allowed: {', '.join(DEMO_SCENARIOS)}"))
    return DEMO_SCENARIOS[scenario]


def _choice(scenario: str, agent: str) -> AgentChoice:
    """Return the available choice of ``agent`` on ``scenario`` or raise ScenarioError naming the available agents."""
    choices = {choice.agent: choice for choice in agent_choices(scenario)}
    if agent not in choices:
        raise ScenarioError(located("demo", "agent", f"unknown value {agent!r}; allowed: {', '.join(DEMO_AGENTS)}"))
    choice = choices[agent]
    if not choice.available:
        available = ", ".join(name for name, item in choices.items() if item.available)
        reason = {
            "not_shipped": "ships no checkpoint",
            "checkpoint_missing": "has a checkpoint_path whose files are missing",
            "needs_meta_actions": "needs discrete meta-actions (env.config.action.type DiscreteMetaAction)",
        }[choice.unavailable or "not_shipped"]
        raise ScenarioError(located("demo", "agent", f"{agent!r} {reason} for scenario {scenario!r}; available: {available}"))
    return choice


def perturbations_for(scenario: str) -> dict[str, Any]:
    """Return the driving perturbations that apply to ``scenario``, by name.

    ``obs_noise`` and ``obs_dropout`` act on Kinematics observations, so they are left out of a
    scenario that observes something else (racetrack's occupancy grid).
    """
    from apps.driving.perturbations import PERTURBATIONS

    raw = read_with_extends(SCENARIOS_DIR / _demo_scenario(scenario).rule_file)
    kinematics = _env_config_section(raw, "observation").get("type") == "Kinematics"
    return {name: item for name, item in PERTURBATIONS.items() if kinematics or name not in ("obs_noise", "obs_dropout")}


def play_episode(
    scenario: DemoScenarioName | str,
    agent: DemoAgent | str,
    perturb: dict[str, float] | None = None,
    seed: int = 0,
    max_steps: int | None = None,
) -> Iterator[tuple[np.ndarray, dict[str, Any]]]:
    """Play one episode of ``agent`` on ``scenario`` and yield ``(frame, panel)`` after the reset and after every step.

    The panel contains ``step``, ``speed`` (m/s), ``ttc`` (s, capped at 10), ``headway`` (s), ``cost``
    (this step), ``episode_cost``, ``shield_interventions``, ``shield_intervened``, ``action``,
    ``reward``, ``episode_return`` and ``crashed``. Raises ScenarioError for an unknown scenario, an
    unknown or unavailable agent, or an invalid perturbation.
    """
    from apps.driving.envs import KIND, with_ego_controller
    from shared.scenario import load_scenario

    choice = _choice(scenario, agent)
    assert choice.scenario_file is not None
    loaded = load_scenario(str(choice.scenario_file))
    if agent == "idm":
        loaded = with_ego_controller(loaded, "idm")
    perturb = dict(perturb or {})
    KIND.validate_driving_perturb(loaded, perturb, "demo", "perturb")
    # IDM/MOBIL never meets the shield (make_env skips it for that controller); random drives without it.
    shield = False if agent == "random" else None
    env = KIND.make_env(loaded, seed=seed, render_mode="rgb_array", perturb=perturb, training=False, shield=shield)
    try:
        policy = _policy(agent, loaded, env, seed)
        obs, info = env.reset(seed=seed)
        yield env.render(), _panel(0, info, None, 0.0, 0.0, 0.0)
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
    from apps.driving.baselines import idm_policy, random_policy
    from apps.driving.envs import KIND

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
