"""Scenario kinds: how a scenario turns into environments, a training run and an evaluation.

A kind is registered under the name that scenario files put in ``kind:``. The built-in ``gym``
kind covers any single-agent Gymnasium env (classic control out of the box); apps subclass
:class:`GymKind` for their own envs (Atari, highway-env) or :class:`ScenarioKind` for pipelines
that are not one agent in one env (self-play, the recommendation pipeline, the quickstart suite).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import gymnasium as gym
import numpy as np
from pydantic import BaseModel

from shared.errors import ScenarioError, located
from shared.registry import register_kind, unknown_choice

if TYPE_CHECKING:
    from shared.agents.base import Agent
    from shared.rundir import RunDir
    from shared.scenario import LoadedScenario


@dataclass
class RunOptions:
    """Options of ``scenariolab run`` that are not part of the scenario file."""

    budget: str = "default"
    seed: int | None = None
    resume: bool = False
    progress: bool = True
    distributed: bool = False


@dataclass
class EvalOptions:
    """Options of ``scenariolab eval``."""

    checkpoint: Path | None = None
    episodes: int | None = None
    seeds: list[int] | None = None
    perturb: dict[str, float] = field(default_factory=dict)
    random_baseline: bool = True


@dataclass(frozen=True)
class Perturbation:
    """A named perturbation that ``--perturb NAME=LEVEL`` may set, with its allowed level range."""

    name: str
    low: float
    high: float
    description: str


class EpisodeTracker:
    """Accumulates one episode's metrics step by step; the default tracks return and length.

    Keys of :meth:`result` are the final metric names of ``metrics.json`` (``return_mean``), so
    aggregation over episodes is a plain mean with a confidence interval.
    """

    def reset(self, env: gym.Env, obs: Any, info: dict[str, Any]) -> None:
        self.episode_return = 0.0
        self.episode_length = 0

    def step(self, env: gym.Env, action: Any, reward: float, terminated: bool, truncated: bool, info: dict[str, Any]) -> None:
        self.episode_return += float(reward)
        self.episode_length += 1

    def result(self) -> dict[str, float]:
        return {"return_mean": self.episode_return, "episode_length_mean": float(self.episode_length)}


class ScenarioKind:
    """Base of every scenario kind. Subclasses set the class attributes and override what differs."""

    name: str = ""
    domain: str = ""
    description: str = ""
    needs_agent: bool = True
    settings_model: type[BaseModel] | None = None
    perturbations: dict[str, Perturbation] = {}

    def validate(self, loaded: "LoadedScenario") -> None:
        """Check what pydantic cannot (env ids, env config keys, agent fit); raise ScenarioError."""

    def validate_perturb(self, perturb: dict[str, float], source: str, field_name: str = "perturb") -> None:
        """Reject perturbation names this kind does not know and levels outside their range."""
        for key, level in perturb.items():
            if key not in self.perturbations:
                raise ScenarioError(unknown_choice(source, f"{field_name}.{key}", key, sorted(self.perturbations)))
            spec = self.perturbations[key]
            if not spec.low <= float(level) <= spec.high:
                raise ScenarioError(located(source, f"{field_name}.{key}", f"level {level} is out of range; allowed: {spec.low} to {spec.high}"))

    def run(self, loaded: "LoadedScenario", run_dir: "RunDir", options: RunOptions) -> dict[str, Any]:
        """Train (unless the scenario sets ``train: false``), evaluate and write the run folder; return metrics.json's content."""
        raise NotImplementedError

    def evaluate(self, loaded: "LoadedScenario", run_dir: "RunDir", options: EvalOptions) -> dict[str, Any]:
        """Evaluate a checkpoint and write metrics.json into ``run_dir``; return its content."""
        raise NotImplementedError


class GymKind(ScenarioKind):
    """A single-agent Gymnasium env trained by one shared agent through the shared training loop."""

    name = "gym"
    domain = "classic"
    description = "Any registered single-agent Gymnasium env (classic control by default)."

    def env_ids(self) -> set[str] | None:
        """Return the env ids this kind accepts, or None to accept any registered id."""
        return None

    def validate(self, loaded: "LoadedScenario") -> None:
        from shared.agents import get_agent_class

        scenario = loaded.scenario
        source = str(loaded.source)
        if scenario.env is None:
            raise ScenarioError(located(source, "env", "required for kind " + repr(self.name)))
        self.validate_env_id(scenario.env.id, source)
        self.validate_perturb(scenario.perturb, source)
        if scenario.env.vectorization == "native":
            self.validate_native_vectorization(scenario.env.id, source)
        if loaded.agent_config is not None:
            env = self.make_env(loaded, seed=0, training=False)
            try:
                reason = get_agent_class(scenario.agent["name"], source).check_spaces(env.observation_space, env.action_space)
            finally:
                env.close()
            if reason:
                raise ScenarioError(located(source, "agent.name", reason))

    def validate_native_vectorization(self, env_id: str, source: str) -> None:
        """Reject ``vectorization: native`` where the env has no batched implementation or the kind wraps its envs."""
        if type(self).make_env is not GymKind.make_env:
            raise ScenarioError(located(source, "env.vectorization", f"'native' is only for plain gym scenarios; kind {self.name!r} wraps each env, use sync or async"))
        if gym.registry[env_id].vector_entry_point is None:
            batched = sorted(key for key, spec in gym.registry.items() if spec.vector_entry_point is not None)
            raise ScenarioError(located(source, "env.vectorization", f"{env_id} has no native vector env; allowed for {', '.join(batched)}; use sync or async"))

    def validate_env_id(self, env_id: str, source: str) -> None:
        allowed = self.env_ids()
        registered = sorted(allowed if allowed is not None else gym.registry.keys())
        if env_id not in registered:
            raise ScenarioError(unknown_choice(source, "env.id", env_id, registered))

    def make_env(
        self,
        loaded: "LoadedScenario",
        *,
        seed: int | None = None,
        render_mode: str | None = None,
        perturb: dict[str, float] | None = None,
        training: bool = True,
    ) -> gym.Env:
        """Build one env instance. ``training`` is False for evaluation (no reward shaping or clipping)."""
        spec = loaded.scenario.env
        assert spec is not None
        kwargs: dict[str, Any] = dict(spec.config)
        if spec.max_episode_steps is not None:
            kwargs["max_episode_steps"] = spec.max_episode_steps
        if render_mode is not None:
            kwargs["render_mode"] = render_mode
        try:
            env = gym.make(spec.id, **kwargs)
        except TypeError as error:
            raise ScenarioError(located(str(loaded.source), "env.config", f"{spec.id} rejected its arguments: {error}")) from None
        return env

    def make_baseline_env(self, loaded: "LoadedScenario", *, seed: int | None = None, perturb: dict[str, float] | None = None) -> gym.Env:
        """Build the env the random baseline plays in; kinds override it to leave out agent-side aids such as a shield."""
        return self.make_env(loaded, seed=seed, perturb=perturb, training=False)

    def make_vector_env(self, loaded: "LoadedScenario", seed: int) -> gym.vector.VectorEnv:
        """Build the training vector env with next-step autoreset (Gymnasium 1.x's default)."""
        spec = loaded.scenario.env
        assert spec is not None
        if spec.vectorization == "native":
            kwargs: dict[str, Any] = dict(spec.config)
            if spec.max_episode_steps is not None:
                kwargs["max_episode_steps"] = spec.max_episode_steps
            return gym.make_vec(spec.id, num_envs=spec.num_envs, vectorization_mode="vector_entry_point", **kwargs)
        makers: list[Callable[[], gym.Env]] = [lambda: self.make_env(loaded, training=True) for _ in range(spec.num_envs)]
        if spec.vectorization == "async":
            return gym.vector.AsyncVectorEnv(makers, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
        return gym.vector.SyncVectorEnv(makers, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)

    def episode_tracker(self, loaded: "LoadedScenario") -> EpisodeTracker:
        """Return a fresh tracker for one evaluation episode."""
        return EpisodeTracker()

    def build_agent(self, loaded: "LoadedScenario", env: gym.Env | gym.vector.VectorEnv, total_steps: int, seed: int) -> "Agent":
        """Construct the scenario's agent for the spaces of ``env``."""
        from shared.agents import get_agent_class

        scenario = loaded.scenario
        agent_class = get_agent_class(scenario.agent["name"], str(loaded.source))
        observation_space = getattr(env, "single_observation_space", env.observation_space)
        action_space = getattr(env, "single_action_space", env.action_space)
        num_envs = getattr(env, "num_envs", 1)
        return agent_class(
            observation_space,
            action_space,
            loaded.agent_config,
            num_envs=num_envs,
            total_steps=total_steps,
            seed=seed,
            device=resolve_device(scenario.device),
        )

    def run(self, loaded: "LoadedScenario", run_dir: "RunDir", options: RunOptions) -> dict[str, Any]:
        from shared.pipeline import run_gym_scenario

        return run_gym_scenario(self, loaded, run_dir, options)

    def evaluate(self, loaded: "LoadedScenario", run_dir: "RunDir", options: EvalOptions) -> dict[str, Any]:
        from shared.pipeline import evaluate_gym_scenario

        return evaluate_gym_scenario(self, loaded, run_dir, options)


def resolve_device(name: str) -> str:
    """Map ``auto`` to ``cuda`` when a GPU is present, else ``cpu``."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def random_action_fn(action_space: gym.Space, seed: int) -> Callable[[Any], Any]:
    """Return a policy that samples uniformly from ``action_space`` with its own seeded generator."""
    space = action_space
    space.seed(seed)

    def act(_obs: Any) -> Any:
        return space.sample()

    return act


register_kind(GymKind())
