"""Perturbations for robustness tests: observation noise and dropout, traffic density, aggressive drivers, action delay.

Each has a level range declared in :data:`PERTURBATIONS`; ``scenariolab eval --perturb NAME=LEVEL``
and the scenario's ``perturb:`` mapping set them. Level 0 (1 for ``density``) leaves the env as it is.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from shared.kinds import Perturbation

PERTURBATIONS: dict[str, Perturbation] = {
    "obs_noise": Perturbation("obs_noise", 0.0, 0.5, "Gaussian noise on Kinematics features; sigma as a fraction of each feature's range."),
    "obs_dropout": Perturbation("obs_dropout", 0.0, 1.0, "Chance that each other vehicle's Kinematics row is zeroed, as if unseen."),
    "density": Perturbation("density", 0.5, 2.0, "Factor on traffic density and vehicle count (x0.5 to x2)."),
    "aggressive": Perturbation("aggressive", 0.0, 1.0, "Share of other vehicles replaced by highway-env's AggressiveVehicle at reset."),
    "action_delay": Perturbation("action_delay", 0.0, 1.0, "Steps between choosing an action and executing it (0 or 1)."),
}

NEUTRAL_LEVELS: dict[str, float] = {"obs_noise": 0.0, "obs_dropout": 0.0, "density": 1.0, "aggressive": 0.0, "action_delay": 0.0}

# Config keys that set how much traffic a highway-env scenario spawns, by env family.
DENSITY_KEYS = ("vehicles_density", "vehicles_count", "initial_vehicle_count", "spawn_probability")


def scale_density(config: dict[str, Any], defaults: dict[str, Any], factor: float) -> dict[str, Any]:
    """Return ``config`` with every traffic-amount key of the env's defaults multiplied by ``factor``.

    Counts are rounded (at least 1); ``spawn_probability`` is capped at 1.
    """
    scaled = dict(config)
    for key in DENSITY_KEYS:
        if key not in defaults:
            continue
        value = scaled.get(key, defaults[key])
        if value is None:
            continue
        if key in ("vehicles_count", "initial_vehicle_count"):
            scaled[key] = max(1, int(round(float(value) * factor)))
        elif key == "spawn_probability":
            scaled[key] = min(1.0, float(value) * factor)
        else:
            scaled[key] = float(value) * factor
    return scaled


def kinematics_config(env: gym.Env) -> tuple[list[str], bool] | None:
    """Return (feature names, normalised?) when the env observes Kinematics, else None."""
    from highway_env.envs.common.observation import KinematicObservation

    observation_type = getattr(env.unwrapped, "observation_type", None)
    if not isinstance(observation_type, KinematicObservation):
        return None
    return list(observation_type.features), bool(observation_type.normalize)


class KinematicsNoise(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Add Gaussian noise to every Kinematics feature except ``presence``; zero rows stay zero.

    With normalised features in [-1, 1] the range is 2, so sigma is ``2 * level``.

    Limitation: for unnormalised observations the range is taken from the observation itself
    (max - min of each feature over the present rows), which varies from step to step.
    """

    def __init__(self, env: gym.Env, level: float, seed: int | None = None):
        gym.utils.RecordConstructorArgs.__init__(self, level=level, seed=seed)
        super().__init__(env)
        config = kinematics_config(env)
        if config is None:
            raise ValueError("obs_noise needs a Kinematics observation")
        self.features, self.normalized = config
        self.level = float(level)
        self._rng = np.random.default_rng(seed)

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        if kwargs.get("seed") is not None:
            self._rng = np.random.default_rng(kwargs["seed"] + 7919)
        return super().reset(**kwargs)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        obs = np.array(observation, dtype=np.float32, copy=True)
        columns = [i for i, name in enumerate(self.features) if name != "presence"]
        present = np.abs(obs).sum(axis=1) > 0
        if self.normalized:
            spread = np.full(len(columns), 2.0)
        else:
            rows = obs[present][:, columns] if present.any() else obs[:, columns]
            spread = np.maximum(rows.max(axis=0) - rows.min(axis=0), 1e-6)
        noise = self._rng.normal(0.0, 1.0, size=(obs.shape[0], len(columns))) * spread * self.level
        obs[np.ix_(present, columns)] += noise[present].astype(np.float32)
        return obs


class KinematicsDropout(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Zero each other vehicle's Kinematics row with probability ``level``; the ego row (row 0) stays."""

    def __init__(self, env: gym.Env, level: float, seed: int | None = None):
        gym.utils.RecordConstructorArgs.__init__(self, level=level, seed=seed)
        super().__init__(env)
        if kinematics_config(env) is None:
            raise ValueError("obs_dropout needs a Kinematics observation")
        self.level = float(level)
        self._rng = np.random.default_rng(seed)

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        if kwargs.get("seed") is not None:
            self._rng = np.random.default_rng(kwargs["seed"] + 104729)
        return super().reset(**kwargs)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        obs = np.array(observation, dtype=np.float32, copy=True)
        drop = self._rng.random(obs.shape[0]) < self.level
        drop[0] = False
        obs[drop] = 0.0
        return obs


class AggressiveTraffic(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """After each reset, replace a share ``level`` of the other IDM vehicles by AggressiveVehicle.

    AggressiveVehicle (highway-env) follows closer and changes lanes more eagerly than IDMVehicle.
    The draw uses the env's own ``np_random``, so a seeded reset gives the same traffic.
    """

    def __init__(self, env: gym.Env, level: float):
        gym.utils.RecordConstructorArgs.__init__(self, level=level)
        super().__init__(env)
        self.level = float(level)

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        from highway_env.vehicle.behavior import AggressiveVehicle, IDMVehicle

        obs, info = self.env.reset(**kwargs)
        base = self.env.unwrapped
        vehicles = base.road.vehicles
        for i, vehicle in enumerate(vehicles):
            if vehicle in base.controlled_vehicles or not isinstance(vehicle, IDMVehicle):
                continue
            if base.np_random.random() < self.level:
                replacement = AggressiveVehicle.create_from(vehicle)
                replacement.check_collisions = vehicle.check_collisions
                vehicles[i] = replacement
        return obs, info


class ActionDelay(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Execute each action one step late; the first step of an episode executes ``noop``."""

    def __init__(self, env: gym.Env, noop: Any):
        gym.utils.RecordConstructorArgs.__init__(self, noop=noop)
        super().__init__(env)
        self.noop = noop
        self._pending = noop

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        self._pending = self.noop
        return self.env.reset(**kwargs)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        executed, self._pending = self._pending, action
        return self.env.step(executed)
