"""A safety shield for highway-env's discrete meta-actions (LANE_LEFT, IDLE, LANE_RIGHT, FASTER, SLOWER).

The shield sits between any policy (trained, scripted or random) and the env. Before each step it
predicts, from the simulator's vehicle states, what the proposed meta-action would lead to:

- a lane change is unsafe when the front or rear gap on the target lane has a TTC below the
  threshold (or the gap is already closed, a vehicle alongside);
- FASTER is unsafe when the time headway or the TTC to the vehicle ahead is below its threshold,
  with the ego tracking the next target speed;
- IDLE and SLOWER are unsafe when the TTC to the vehicle ahead is below the threshold.

TTC and headway are predicted for the end of the decision period (1 / policy_frequency seconds),
because the action holds for that long. Over the period the gap shrinks at the mean of the current
closing speed and the closing speed once the ego tracks its new target speed.

An unsafe action is replaced by the first safe legal action in the order IDLE, SLOWER, LANE_LEFT,
LANE_RIGHT. When none of them is safe, the shield picks the one with the largest predicted TTC.

Limitation: predictions assume other vehicles keep their speed and lane over the step, so a
neighbour that brakes hard or cuts in during the step is not foreseen.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
from pydantic import BaseModel, ConfigDict, Field

from apps.driving.costs import TTC_CAP_S, gap_between, speed_along_lane, time_headway, time_to_collision


class ShieldSettings(BaseModel):
    """Whether the shield is on and the TTC and time-headway thresholds it enforces."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    ttc_threshold_s: float = Field(1.5, gt=0, le=TTC_CAP_S, description="Minimum predicted TTC in seconds.")
    headway_threshold_s: float = Field(1.0, gt=0, le=5.0, description="Minimum time headway before FASTER is allowed, in seconds.")


def is_discrete_meta_env(env: gym.Env) -> bool:
    """Return whether the env's action type is highway-env's DiscreteMetaAction."""
    from highway_env.envs.common.action import DiscreteMetaAction

    return isinstance(getattr(env.unwrapped, "action_type", None), DiscreteMetaAction)


class MetaActionShield(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Replace unsafe discrete meta-actions before they reach the env; count the interventions.

    ``info["shield_intervened"]`` is True on the steps where the proposed action was replaced, and
    ``info["shield_action"]`` is the action actually sent. ``interventions`` counts them per episode.
    """

    def __init__(self, env: gym.Env, settings: ShieldSettings | None = None):
        if not is_discrete_meta_env(env):
            raise ValueError("MetaActionShield needs an env with highway-env's DiscreteMetaAction action type")
        gym.utils.RecordConstructorArgs.__init__(self, settings=settings)
        super().__init__(env)
        self.settings = settings or ShieldSettings()
        self.interventions = 0

    # -- predictions ------------------------------------------------------------------------------

    def _names(self) -> dict[int, str]:
        return dict(self.env.unwrapped.action_type.actions)

    def _side_lane(self, direction: int) -> tuple[str, str, int] | None:
        """Return the reachable lane left (-1) or right (+1) of the ego vehicle, or None."""
        base = self.env.unwrapped
        ego = base.vehicle
        lane_index = ego.lane_index
        network = base.road.network
        for side in network.side_lanes(lane_index):
            if (side[2] - lane_index[2]) * direction > 0 and network.get_lane(side).is_reachable_from(ego.position):
                return side
        return None

    def _step_seconds(self) -> float:
        """Return the decision period, 1 / policy_frequency seconds."""
        return 1.0 / float(self.env.unwrapped.config.get("policy_frequency", 1))

    def _ttc_after_step(self, gap_m: float, closing_now: float, closing_end: float) -> float:
        """Return the TTC at the end of the decision period; the gap shrinks at the mean closing speed."""
        if gap_m <= 0.0:
            return 0.0
        gap_end = gap_m - 0.5 * (closing_now + closing_end) * self._step_seconds()
        return time_to_collision(gap_end, closing_end)

    def _front_ttc(self, target_speed: float | None = None) -> tuple[float, float]:
        """Return (TTC, time headway) to the vehicle ahead at the end of the step, if the ego tracks ``target_speed``."""
        base = self.env.unwrapped
        ego = base.vehicle
        front, _ = gap_between(base.road, ego, ego.lane_index)
        if front is None:
            return math.inf, math.inf
        lane = base.road.network.get_lane(ego.lane_index)
        current = speed_along_lane(ego, lane)
        target = current if target_speed is None else target_speed
        closing_end = front.closing_speed_mps + (target - current)
        ttc = self._ttc_after_step(front.gap_m, front.closing_speed_mps, closing_end)
        gap_end = front.gap_m - 0.5 * (front.closing_speed_mps + closing_end) * self._step_seconds()
        return ttc, time_headway(gap_end, target)

    def predicted_ttc(self, action: int) -> float:
        """Return the smallest TTC at the end of the step after ``action`` (inf when no gap is closing)."""
        base = self.env.unwrapped
        ego = base.vehicle
        name = self._names()[int(action)]
        if name in ("LANE_LEFT", "LANE_RIGHT"):
            target = self._side_lane(-1 if name == "LANE_LEFT" else 1)
            if target is None:  # No lane there: the action behaves like IDLE.
                return self._front_ttc(self._idle_target_speed())[0]
            front, rear = gap_between(base.road, ego, target)
            ttc = math.inf
            for state in (front, rear):
                if state is not None:
                    ttc = min(ttc, self._ttc_after_step(state.gap_m, state.closing_speed_mps, state.closing_speed_mps))
            return ttc
        if name == "FASTER":
            return self._front_ttc(self._next_target_speed(+1))[0]
        if name == "SLOWER":
            return self._front_ttc(self._next_target_speed(-1))[0]
        return self._front_ttc(self._idle_target_speed())[0]

    def _idle_target_speed(self) -> float:
        ego = self.env.unwrapped.vehicle
        return float(getattr(ego, "target_speed", ego.speed))

    def _next_target_speed(self, step: int) -> float:
        ego = self.env.unwrapped.vehicle
        speeds = getattr(ego, "target_speeds", None)
        if speeds is None or not hasattr(ego, "speed_to_index"):
            return float(ego.speed)
        index = int(min(max(ego.speed_to_index(ego.speed) + step, 0), len(speeds) - 1))
        return float(speeds[index])

    def is_safe(self, action: int) -> bool:
        """Return whether ``action`` keeps TTC (and, for FASTER, time headway) above the thresholds."""
        name = self._names()[int(action)]
        if self.predicted_ttc(action) < self.settings.ttc_threshold_s:
            return False
        if name == "FASTER":
            _, headway = self._front_ttc(self._next_target_speed(+1))
            if headway < self.settings.headway_threshold_s:
                return False
        return True

    def safe_action(self, action: int) -> int:
        """Return ``action`` when it is safe, else the safest legal alternative."""
        action = int(action)
        if self.is_safe(action):
            return action
        names = self._names()
        index_of = {name: index for index, name in names.items()}
        legal = set(self.env.unwrapped.action_type.get_available_actions())
        order = [index_of[name] for name in ("IDLE", "SLOWER", "LANE_LEFT", "LANE_RIGHT") if name in index_of]
        candidates = [a for a in order if a != action and a in legal]
        for candidate in candidates:
            if self.is_safe(candidate):
                return candidate
        if not candidates:
            return action
        return max(candidates, key=self.predicted_ttc)

    # -- gym.Wrapper -----------------------------------------------------------------------------

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self.interventions = 0
        info["shield_intervened"] = False
        info["shield_interventions"] = 0
        return obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        proposed = int(action)
        executed = self.safe_action(proposed)
        intervened = executed != proposed
        self.interventions += int(intervened)
        obs, reward, terminated, truncated, info = self.env.step(executed)
        info["shield_intervened"] = intervened
        info["shield_action"] = executed
        info["shield_interventions"] = self.interventions
        return obs, reward, terminated, truncated, info
