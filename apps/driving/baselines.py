"""Rule and random baselines: highway-env's own IDM/MOBIL model driving the ego vehicle, and a random policy.

The rule baseline swaps the ego vehicle for a ``highway_env.vehicle.behavior.IDMVehicle`` at its
current state after every reset. That vehicle drives itself with the Intelligent Driver Model
(longitudinal) and MOBIL (lane changes), ignoring the actions the env receives, so any policy can
stand in front of it; :func:`idm_policy` sends the no-op action. Cost, metrics and perturbations are
unchanged because they read the same simulator state.
"""

from __future__ import annotations

from typing import Any, Callable

import gymnasium as gym
import numpy as np


class IDMEgoWrapper(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Let highway-env's IDM/MOBIL vehicle model drive the ego vehicle, ignoring the actions.

    ``target_speed_mps`` is the IDM desired speed. The default is the top of the env's
    ``reward_speed_range`` (30 m/s on highway), where the speed reward is highest.
    """

    def __init__(self, env: gym.Env, target_speed_mps: float | None = None):
        gym.utils.RecordConstructorArgs.__init__(self, target_speed_mps=target_speed_mps)
        super().__init__(env)
        self.target_speed_mps = target_speed_mps

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        from highway_env.vehicle.behavior import IDMVehicle

        obs, info = self.env.reset(**kwargs)
        base = self.env.unwrapped
        ego = base.vehicle
        idm = IDMVehicle.create_from(ego)
        speed_range = base.config.get("reward_speed_range")
        target = self.target_speed_mps
        if target is None and speed_range is not None:
            target = float(speed_range[1])
        if target is not None:
            idm.target_speed = float(target)
        road_vehicles = base.road.vehicles
        road_vehicles[road_vehicles.index(ego)] = idm
        base.controlled_vehicles[base.controlled_vehicles.index(ego)] = idm
        # The observation was computed for the replaced vehicle at the same state, so it stays valid.
        return obs, info


def noop_action(action_space: gym.Space) -> Any:
    """Return the action that changes nothing: IDLE for discrete meta-actions, zeros for continuous ones."""
    if isinstance(action_space, gym.spaces.Discrete):
        # DiscreteMetaAction puts IDLE at index 1 in all three of its action sets.
        return 1
    return np.zeros(action_space.shape, dtype=action_space.dtype)


def idm_policy(action_space: gym.Space) -> Callable[[Any], Any]:
    """Return the policy to pair with :class:`IDMEgoWrapper`: it always sends the no-op action."""
    action = noop_action(action_space)

    def act(_obs: Any) -> Any:
        return action

    return act


def random_policy(action_space: gym.Space, seed: int) -> Callable[[Any], Any]:
    """Return a policy that samples uniformly from a copy of ``action_space`` seeded with ``seed``."""
    import copy

    space = copy.deepcopy(action_space)
    space.seed(seed)

    def act(_obs: Any) -> Any:
        return space.sample()

    return act
