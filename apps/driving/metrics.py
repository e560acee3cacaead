"""Per-episode driving metrics from the simulator state that :class:`SafetyCostWrapper` puts in ``info``.

One :class:`DrivingEpisodeTracker` follows one episode. Its ``result()`` keys are the final metric
names of ``metrics.json``, so the mean over episodes (with a bootstrap CI) is the reported value:

- ``collision_rate``: 1 if the ego vehicle crashed in the episode (other vehicles' crashes do not count).
- ``offroad_rate``: 1 if the ego vehicle left the road at any step.
- ``success_rate``: 1 if the episode ended without a crash or leaving the road and, on envs with a
  goal (merge: passing the ramp, intersection: reaching the exit), with the goal reached.
- ``cost_mean``: the episode's summed safety cost.
- ``ttc_violation_rate`` / ``headway_violation_rate``: share of steps with TTC / time headway below
  the threshold.
- ``min_ttc_mean``: the episode's smallest TTC in seconds, capped at ``TTC_CAP_S``.
- ``speed_mean``: mean ego speed in m/s; ``progress_m_mean``: path length driven in metres, from
  simulator positions; ``lane_changes_mean``: changes of lane id on the same road segment;
  ``jerk_mean``: mean absolute change of longitudinal acceleration per second, in m/s^3, at the
  policy frequency; ``return_mean``: summed reward; ``shield_intervention_rate``: share of steps
  where the shield replaced the action (only when a shield is on).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from apps.driving.costs import TTC_CAP_S
from shared.kinds import EpisodeTracker


class DrivingEpisodeTracker(EpisodeTracker):
    """Accumulate one episode's driving metrics from ``info`` written by the cost and shield wrappers."""

    def __init__(self, ttc_threshold_s: float = 1.5, headway_threshold_s: float = 1.0, goal: str | None = None):
        self.ttc_threshold_s = ttc_threshold_s
        self.headway_threshold_s = headway_threshold_s
        self.goal = goal  # "merge", "intersection" or None

    def reset(self, env: gym.Env, obs: Any, info: dict[str, Any]) -> None:
        self.episode_return = 0.0
        self.episode_length = 0
        self.cost = 0.0
        self.crashed = False
        self.offroad = False
        self.ttc_violations = 0
        self.headway_violations = 0
        self.min_ttc = TTC_CAP_S
        self.speeds: list[float] = []
        self.progress_m = 0.0
        self.lane_changes = 0
        self.jerks: list[float] = []
        self.interventions = 0
        self.shielded = "shield_intervened" in info
        self.terminated = False
        self.goal_reached = False
        self._position = np.asarray(info.get("ego_position", (0.0, 0.0)), dtype=np.float64)
        self._lane = (info.get("ego_road"), info.get("ego_lane"))
        self._speed = float(info.get("ego_speed", 0.0))
        self._acceleration: float | None = None
        base = env.unwrapped
        config = getattr(base, "config", {})
        self._dt = 1.0 / float(config.get("policy_frequency", 1))
        self._env = base

    def step(self, env: gym.Env, action: Any, reward: float, terminated: bool, truncated: bool, info: dict[str, Any]) -> None:
        self.episode_return += float(reward)
        self.episode_length += 1
        self.cost += float(info.get("cost", 0.0))
        self.crashed = self.crashed or bool(info.get("ego_crashed", info.get("crashed", False)))
        self.offroad = self.offroad or not bool(info.get("on_road", True))
        ttc = float(info.get("ttc", TTC_CAP_S))
        headway = float(info.get("headway", TTC_CAP_S))
        self.ttc_violations += int(ttc < self.ttc_threshold_s)
        self.headway_violations += int(headway < self.headway_threshold_s)
        self.min_ttc = min(self.min_ttc, ttc)
        speed = float(info.get("ego_speed", 0.0))
        self.speeds.append(speed)

        position = np.asarray(info.get("ego_position", self._position), dtype=np.float64)
        self.progress_m += float(np.linalg.norm(position - self._position))
        self._position = position

        lane = (info.get("ego_road"), info.get("ego_lane"))
        if lane[0] == self._lane[0] and lane[1] != self._lane[1]:
            self.lane_changes += 1
        self._lane = lane

        acceleration = (speed - self._speed) / self._dt
        if self._acceleration is not None:
            self.jerks.append(abs(acceleration - self._acceleration) / self._dt)
        self._acceleration = acceleration
        self._speed = speed

        self.interventions += int(bool(info.get("shield_intervened", False)))
        if terminated or truncated:
            self.terminated = bool(terminated)
            self.goal_reached = self._goal_reached()

    def _goal_reached(self) -> bool:
        base = self._env
        if self.goal == "intersection" and hasattr(base, "has_arrived"):
            return bool(base.has_arrived(base.vehicle))
        if self.goal == "merge":
            # merge-v0 ends the episode (terminated) once the ego passes the ramp at x > 370 m.
            return self.terminated and not self.crashed
        return True

    def result(self) -> dict[str, float]:
        steps = max(self.episode_length, 1)
        result = {
            "collision_rate": float(self.crashed),
            "cost_mean": self.cost,
            "ttc_violation_rate": self.ttc_violations / steps,
            "min_ttc_mean": float(self.min_ttc),
            "headway_violation_rate": self.headway_violations / steps,
            "offroad_rate": float(self.offroad),
            "speed_mean": float(np.mean(self.speeds)) if self.speeds else 0.0,
            "progress_m_mean": self.progress_m,
            "lane_changes_mean": float(self.lane_changes),
            "jerk_mean": float(np.mean(self.jerks)) if self.jerks else 0.0,
            "return_mean": self.episode_return,
            "episode_length_mean": float(self.episode_length),
        }
        if self.goal is not None:
            result["success_rate"] = float(not self.crashed and not self.offroad and self.goal_reached)
        if self.shielded:
            result["shield_intervention_rate"] = self.interventions / steps
        return result
