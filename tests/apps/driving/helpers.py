"""Builders for driving tests: an empty highway with hand-placed vehicles, and loaded scenarios."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import highway_env  # noqa: F401  (registers the env ids)
import numpy as np
from highway_env.vehicle.kinematics import Vehicle

ROOT = Path(__file__).resolve().parents[3]
SCENARIOS = ROOT / "scenarios" / "driving"

EMPTY_HIGHWAY = {
    "vehicles_count": 0,
    "lanes_count": 3,
    "initial_lane_id": 1,
    "duration": 10,
}


def empty_highway(**config: Any) -> gym.Env:
    """Return highway-fast-v0 with only the ego vehicle, in the middle lane (lane id 1, y = 4 m)."""
    return gym.make("highway-fast-v0", config={**EMPTY_HIGHWAY, **config})


def place(env: gym.Env, dx: float, lane_id: int, speed: float) -> Vehicle:
    """Put a constant-speed vehicle ``dx`` metres ahead of the ego (negative: behind) on lane ``lane_id``."""
    base = env.unwrapped
    ego = base.vehicle
    lane = base.road.network.get_lane(("0", "1", lane_id))
    s_ego = lane.local_coordinates(ego.position)[0]
    vehicle = Vehicle(base.road, lane.position(s_ego + dx, 0.0), lane.heading_at(s_ego + dx), speed)
    base.road.vehicles.append(vehicle)
    return vehicle


def set_ego(env: gym.Env, speed: float) -> None:
    """Set the ego speed and its MDP target speed so that it keeps that speed."""
    ego = env.unwrapped.vehicle
    ego.speed = speed
    ego.target_speed = speed
    ego.speed_index = int(np.argmin(np.abs(ego.target_speeds - speed)))


def load(name: str, *overrides: str):
    """Load a driving scenario by file stem with ``--set``-style overrides."""
    from shared.scenario import load_scenario

    return load_scenario(str(SCENARIOS / f"{name}.yaml"), list(overrides))
