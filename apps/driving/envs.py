"""The ``driving`` scenario kind: highway-env scenarios with a safety cost, an optional shield and perturbations.

``DrivingKind.make_env`` builds, from the inside out:

1. the highway-env env with the scenario's ``env.config`` (traffic scaled by ``density``), wrapped in
   ``OffscreenFrames`` for ``render_mode="rgb_array"`` so frames are drawn on headless machines;
2. ``AggressiveTraffic`` when ``aggressive`` > 0;
3. ``IDMEgoWrapper`` when ``settings.ego_controller`` is ``idm`` (the rule baseline);
4. ``SafetyCostWrapper``: ``info["cost"]`` and ``info["cost_terms"]`` from the simulator state;
5. ``MetaActionShield`` when ``settings.shield.enabled``;
6. ``ActionDelay`` when ``action_delay`` is 1;
7. ``KinematicsDropout`` and ``KinematicsNoise`` for ``obs_dropout`` and ``obs_noise``.

Spaces, rewards and episode ends are highway-env's own (version 1.12): Kinematics observations are
``(vehicles_count, len(features))`` float32 arrays with the ego vehicle in row 0, discrete
meta-actions are ``Discrete(5)`` (``Discrete(3)`` on intersection), racetrack steering is a Box in
[-1, 1]. The reward is the env's configured weighted sum; the cost never enters it.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Literal

import gymnasium as gym
import highway_env  # noqa: F401  (registers highway-env's ids with Gymnasium)
from pydantic import BaseModel, ConfigDict, Field

import apps.driving.attention  # noqa: F401  (registers the ego_attention encoder)
from apps.driving.baselines import IDMEgoWrapper, noop_action
from apps.driving.costs import CostSettings, SafetyCostWrapper
from apps.driving.metrics import DrivingEpisodeTracker
from apps.driving.perturbations import (
    NEUTRAL_LEVELS,
    PERTURBATIONS,
    ActionDelay,
    AggressiveTraffic,
    KinematicsDropout,
    KinematicsNoise,
    scale_density,
)
from apps.driving.rendering import OffscreenFrames
from apps.driving.shield import MetaActionShield, ShieldSettings
from shared.errors import ScenarioError, located
from shared.kinds import EpisodeTracker, GymKind
from shared.registry import register_kind, unknown_choice

if TYPE_CHECKING:
    from shared.kinds import EvalOptions, RunOptions
    from shared.rundir import RunDir
    from shared.scenario import LoadedScenario

# highway-env ids with one ego vehicle and a Box observation; multi-agent and goal-conditioned
# parking envs (Dict observations) are left out.
DRIVING_ENV_IDS: tuple[str, ...] = (
    "highway-v0",
    "highway-fast-v0",
    "merge-v0",
    "merge-v1",
    "roundabout-v0",
    "roundabout-v1",
    "intersection-v0",
    "intersection-v1",
    "intersection-v2",
    "racetrack-v0",
    "racetrack-v1",
    "racetrack-large-v1",
    "racetrack-oval-v1",
    "two-way-v0",
    "exit-v1",
    "lane-keeping-v0",
    "u-turn-v1",
)


class RobustnessSettings(BaseModel):
    """The levels a robustness sweep visits and the agents it compares."""

    model_config = ConfigDict(extra="forbid")

    levels: dict[str, list[float]] = Field(default_factory=dict, description="Levels to sweep, by perturbation name.")
    agents: list[Literal["checkpoint", "idm", "random"]] = Field(default_factory=lambda: ["checkpoint", "idm", "random"])
    episodes: int = Field(5, ge=1, description="Episodes per seed at each level.")
    seeds: list[int] = Field(default_factory=lambda: [20_000, 20_001], min_length=1)


class DrivingSettings(BaseModel):
    """The ``settings:`` mapping of a driving scenario."""

    model_config = ConfigDict(extra="forbid")

    cost: CostSettings = Field(default_factory=CostSettings)
    shield: ShieldSettings = Field(default_factory=ShieldSettings)
    ego_controller: Literal["agent", "idm"] = Field("agent", description="'idm' lets highway-env's IDM/MOBIL model drive the ego vehicle.")
    idm_target_speed_mps: float | None = Field(None, gt=0, description="IDM desired speed; null uses the top of reward_speed_range.")
    idm_baseline: bool = Field(True, description="Also evaluate the IDM/MOBIL rule baseline and add it to metrics.json's baselines.")
    robustness: RobustnessSettings | None = None


def _env_class(env_id: str) -> type:
    return gym.envs.registration.load_env_creator(gym.registry[env_id].entry_point)


def _observation_classes() -> dict[str, type]:
    from highway_env.envs.common import observation as obs

    return {
        "TimeToCollision": obs.TimeToCollisionObservation,
        "Kinematics": obs.KinematicObservation,
        "OccupancyGrid": obs.OccupancyGridObservation,
        "GrayscaleObservation": obs.GrayscaleObservation,
        "AttributesObservation": obs.AttributesObservation,
        "LidarObservation": obs.LidarObservation,
        "ExitObservation": obs.ExitObservation,
    }


def _action_classes() -> dict[str, type]:
    from highway_env.envs.common import action

    return {
        "DiscreteMetaAction": action.DiscreteMetaAction,
        "DiscreteAction": action.DiscreteAction,
        "ContinuousAction": action.ContinuousAction,
    }


def _init_parameters(cls: type) -> set[str]:
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for name, parameter in inspect.signature(init).parameters.items():
            if parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL) and name not in ("self", "env"):
                names.add(name)
    return names


def validate_env_config(env_id: str, config: dict[str, Any], source: str) -> None:
    """Reject ``env.config`` keys that highway-env's env class, observation type or action type does not know."""
    defaults = _env_class(env_id).default_config()
    for key in config:
        if key not in defaults:
            raise ScenarioError(unknown_choice(source, f"env.config.{key}", key, sorted(defaults)))
    for section, classes in (("observation", _observation_classes()), ("action", _action_classes())):
        if section not in config:
            continue
        value = config[section]
        if not isinstance(value, dict):
            raise ScenarioError(located(source, f"env.config.{section}", "must be a mapping with a 'type' key"))
        default_type = defaults[section]["type"]
        type_name = value.get("type", default_type)
        if type_name not in classes:
            raise ScenarioError(unknown_choice(source, f"env.config.{section}.type", type_name, sorted(classes)))
        allowed = _init_parameters(classes[type_name]) | {"type"}
        if type_name == default_type:
            # The env's own defaults may carry keys the class takes through **kwargs ("flatten" on intersection).
            allowed |= set(defaults[section])
        for key in value:
            if key not in allowed:
                raise ScenarioError(unknown_choice(source, f"env.config.{section}.{key}", key, sorted(allowed)))


def goal_of(env_id: str) -> str | None:
    """Return the success criterion family of an env id: "merge", "intersection" or None."""
    if env_id.startswith("merge"):
        return "merge"
    if env_id.startswith("intersection"):
        return "intersection"
    return None


def with_ego_controller(loaded: "LoadedScenario", controller: str) -> "LoadedScenario":
    """Return a copy of ``loaded`` whose ``settings.ego_controller`` is ``controller``."""
    from shared.scenario import LoadedScenario

    base = loaded.settings if isinstance(loaded.settings, DrivingSettings) else DrivingSettings.model_validate(loaded.scenario.settings)
    settings = base.model_copy(update={"ego_controller": controller})
    return LoadedScenario(loaded.scenario, loaded.source, loaded.raw, loaded.agent_config, settings)


class DrivingKind(GymKind):
    """highway-env driving with a simulator-state safety cost, an optional shield and perturbations."""

    name = "driving"
    domain = "driving"
    description = "highway-env scenarios with a TTC/headway/collision cost, a safety shield and robustness perturbations."
    settings_model = DrivingSettings
    perturbations = PERTURBATIONS

    def env_ids(self) -> set[str] | None:
        return {env_id for env_id in DRIVING_ENV_IDS if env_id in gym.registry}

    def settings_of(self, loaded: "LoadedScenario") -> DrivingSettings:
        """Return the scenario's validated driving settings."""
        settings = loaded.settings
        return settings if isinstance(settings, DrivingSettings) else DrivingSettings.model_validate(loaded.scenario.settings)

    def validate(self, loaded: "LoadedScenario") -> None:
        scenario = loaded.scenario
        source = str(loaded.source)
        if scenario.env is None:
            raise ScenarioError(located(source, "env", "required for kind 'driving'"))
        self.validate_env_id(scenario.env.id, source)
        validate_env_config(scenario.env.id, scenario.env.config, source)
        self.validate_driving_perturb(loaded, scenario.perturb, source)
        settings = self.settings_of(loaded)
        probe = gym.make(scenario.env.id, config=dict(scenario.env.config))
        try:
            from apps.driving.shield import is_discrete_meta_env

            if settings.shield.enabled and not is_discrete_meta_env(probe):
                raise ScenarioError(located(source, "settings.shield.enabled", "the shield needs DiscreteMetaAction actions (env.config.action.type)"))
            if settings.idm_baseline and settings.ego_controller != "idm" and not is_discrete_meta_env(probe):
                # highway-env's IDMVehicle cannot take over an ego vehicle that steers continuously (racetrack).
                raise ScenarioError(located(source, "settings.idm_baseline", "the IDM/MOBIL baseline needs DiscreteMetaAction actions (env.config.action.type); set it to false"))
        finally:
            probe.close()
        if settings.robustness is not None:
            for name, levels in settings.robustness.levels.items():
                for level in levels:
                    self.validate_driving_perturb(loaded, {name: level}, source, "settings.robustness.levels")
        super().validate(loaded)

    def validate_driving_perturb(self, loaded: "LoadedScenario", perturb: dict[str, float], source: str, field_name: str = "perturb") -> None:
        """Check names and ranges, that ``action_delay`` is 0 or 1, and that observation perturbations see Kinematics."""
        self.validate_perturb(perturb, source, field_name)
        if "action_delay" in perturb and float(perturb["action_delay"]) not in (0.0, 1.0):
            raise ScenarioError(located(source, f"{field_name}.action_delay", f"level {perturb['action_delay']} is not allowed; allowed: 0 or 1"))
        needs_kinematics = [name for name in ("obs_noise", "obs_dropout") if float(perturb.get(name, 0.0)) > 0.0]
        if needs_kinematics:
            spec = loaded.scenario.env
            assert spec is not None
            observation = {**_env_class(spec.id).default_config()["observation"], **spec.config.get("observation", {})}
            if observation.get("type") != "Kinematics":
                raise ScenarioError(
                    located(source, f"{field_name}.{needs_kinematics[0]}", f"needs a Kinematics observation, but env.config.observation.type is {observation.get('type')!r}")
                )

    def make_env(
        self,
        loaded: "LoadedScenario",
        *,
        seed: int | None = None,
        render_mode: str | None = None,
        perturb: dict[str, float] | None = None,
        training: bool = True,
        shield: bool | None = None,
    ) -> gym.Env:
        """Build one driving env; ``shield`` overrides ``settings.shield.enabled`` (None keeps it)."""
        spec = loaded.scenario.env
        assert spec is not None
        settings = self.settings_of(loaded)
        levels = {**NEUTRAL_LEVELS, **loaded.scenario.perturb, **(perturb or {})}
        if perturb:
            self.validate_driving_perturb(loaded, perturb, str(loaded.source), "--perturb")

        config = dict(spec.config)
        if levels["density"] != 1.0:
            config = scale_density(config, _env_class(spec.id).default_config(), levels["density"])
        kwargs: dict[str, Any] = {"config": config}
        if render_mode is not None:
            kwargs["render_mode"] = render_mode
        if spec.max_episode_steps is not None:
            kwargs["max_episode_steps"] = spec.max_episode_steps
        env = gym.make(spec.id, **kwargs)
        if render_mode == "rgb_array":
            env = OffscreenFrames(env)

        if levels["aggressive"] > 0:
            env = AggressiveTraffic(env, levels["aggressive"])
        if settings.ego_controller == "idm":
            env = IDMEgoWrapper(env, settings.idm_target_speed_mps)
        env = SafetyCostWrapper(env, settings.cost)
        use_shield = settings.shield.enabled if shield is None else shield
        if use_shield and settings.ego_controller == "agent":
            env = MetaActionShield(env, settings.shield)
        if levels["action_delay"] >= 1:
            env = ActionDelay(env, noop_action(env.action_space))
        if levels["obs_dropout"] > 0:
            env = KinematicsDropout(env, levels["obs_dropout"], seed)
        if levels["obs_noise"] > 0:
            env = KinematicsNoise(env, levels["obs_noise"], seed)
        return env

    def make_baseline_env(self, loaded: "LoadedScenario", *, seed: int | None = None, perturb: dict[str, float] | None = None) -> gym.Env:
        """Build the random baseline's env without the shield, so "random" means an unprotected random driver."""
        return self.make_env(loaded, seed=seed, perturb=perturb, training=False, shield=False)

    def run(self, loaded: "LoadedScenario", run_dir: "RunDir", options: "RunOptions") -> dict[str, Any]:
        metrics = super().run(loaded, run_dir, options)
        if metrics.get("interrupted"):
            return metrics
        evaluation = loaded.scenario.evaluation
        return self.add_idm_baseline(loaded, run_dir, metrics, evaluation.episodes, evaluation.seeds, dict(loaded.scenario.perturb))

    def evaluate(self, loaded: "LoadedScenario", run_dir: "RunDir", options: "EvalOptions") -> dict[str, Any]:
        metrics = super().evaluate(loaded, run_dir, options)
        if not options.random_baseline:  # --no-baseline skips every baseline, IDM included.
            return metrics
        evaluation = loaded.scenario.evaluation
        perturb = {**loaded.scenario.perturb, **options.perturb}
        return self.add_idm_baseline(loaded, run_dir, metrics, options.episodes or evaluation.episodes, options.seeds or evaluation.seeds, perturb)

    def add_idm_baseline(
        self, loaded: "LoadedScenario", run_dir: "RunDir", metrics: dict[str, Any], episodes: int, seeds: list[int], perturb: dict[str, float]
    ) -> dict[str, Any]:
        """Evaluate highway-env's IDM/MOBIL driving the ego vehicle on the same seeds; add it to ``baselines``."""
        from apps.driving.baselines import idm_policy
        from shared.evaluation import evaluate_policy, summarize
        from shared.report import write_report

        settings = self.settings_of(loaded)
        if not settings.idm_baseline or settings.ego_controller == "idm":
            return metrics
        idm_loaded = with_ego_controller(loaded, "idm")

        def make_env(seed: int) -> gym.Env:
            return self.make_env(idm_loaded, seed=seed, perturb=perturb, training=False)

        probe = make_env(seeds[0])
        policy = idm_policy(probe.action_space)
        probe.close()
        per_episode = evaluate_policy(make_env, policy, lambda: self.episode_tracker(idm_loaded), episodes, seeds)
        summary = summarize(per_episode, loaded.scenario.evaluation.bootstrap_samples, loaded.scenario.seed)
        metrics.setdefault("baselines", {})["idm"] = {"metrics": summary["metrics"], "ci95": summary["ci95"]}
        run_dir.write_metrics(metrics)
        write_report(run_dir.path)
        return metrics

    def episode_tracker(self, loaded: "LoadedScenario") -> EpisodeTracker:
        settings = self.settings_of(loaded)
        spec = loaded.scenario.env
        assert spec is not None
        return DrivingEpisodeTracker(settings.cost.ttc_threshold_s, settings.cost.headway_threshold_s, goal_of(spec.id))


KIND = DrivingKind()


def register() -> None:
    """Register the ``driving`` kind with the shared registry."""
    register_kind(KIND)
