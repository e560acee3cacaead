"""Safety cost from the simulator's vehicle states: collision, TTC, time headway, off-road, speed limit.

Every quantity here is read from highway-env's ``road.vehicles`` (positions, headings, speeds and lane
geometry), never from the observation or the reward, so the cost stays correct when the observation
is normalised, noisy or partial and when the reward weights change.

Gaps are bumper to bumper along the lane: the distance between the two vehicles' longitudinal lane
coordinates minus half of each vehicle's length. Speeds are projected on the lane direction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

# Lane index as highway-env writes it: (from node, to node, lane id).
LaneIndex = tuple[str, str, int]

TTC_CAP_S = 10.0
"""TTC values above this (including infinity, when no gap is closing) are reported as this many seconds.

It keeps per-episode minima finite so that their mean over episodes is defined.
"""


class CostSettings(BaseModel):
    """Weights and thresholds of the per-step safety cost; a weight of 0 turns a term off."""

    model_config = ConfigDict(extra="forbid")

    collision: float = Field(1.0, ge=0, description="Cost on the step where the ego vehicle crashes.")
    ttc: float = Field(1.0, ge=0, description="Cost on each step whose TTC is below ttc_threshold_s.")
    ttc_threshold_s: float = Field(1.5, gt=0, le=TTC_CAP_S, description="TTC threshold in seconds.")
    headway: float = Field(0.0, ge=0, description="Cost on each step whose time headway is below headway_threshold_s.")
    headway_threshold_s: float = Field(1.0, gt=0, le=5.0, description="Time-headway threshold in seconds.")
    offroad: float = Field(1.0, ge=0, description="Cost on each step the ego vehicle is off the road.")
    speed: float = Field(0.0, ge=0, description="Cost on each step the ego speed exceeds the speed limit.")
    speed_limit_mps: float | None = Field(None, gt=0, description="Speed limit in m/s; null uses the lane's posted limit.")


@dataclass(frozen=True)
class GapState:
    """The nearest vehicle ahead or behind on one lane: bumper-to-bumper gap and closing speed."""

    gap_m: float
    closing_speed_mps: float  # > 0 when the gap shrinks

    @property
    def ttc_s(self) -> float:
        return time_to_collision(self.gap_m, self.closing_speed_mps)


def time_to_collision(gap_m: float, closing_speed_mps: float) -> float:
    """Return the time until the gap closes at constant speeds; inf when it never closes, 0 when it already has."""
    if gap_m <= 0.0:
        return 0.0
    if closing_speed_mps <= 0.0:
        return math.inf
    return gap_m / closing_speed_mps


def time_headway(gap_m: float, follower_speed_mps: float) -> float:
    """Return the time the follower needs to cover the gap at its own speed, or inf when it is stopped."""
    if gap_m <= 0.0:
        return 0.0
    if follower_speed_mps <= 0.0:
        return math.inf
    return gap_m / follower_speed_mps


def speed_along_lane(vehicle: Any, lane: Any) -> float:
    """Project the vehicle's velocity on the lane direction at the vehicle's position."""
    s, _ = lane.local_coordinates(vehicle.position)
    return float(vehicle.speed * math.cos(vehicle.heading - lane.heading_at(s)))


def gap_between(road: Any, ego: Any, lane_index: LaneIndex) -> tuple[GapState | None, GapState | None]:
    """Return the ego vehicle's front and rear gap on ``lane_index`` (the ego is projected onto that lane).

    ``None`` stands for "no vehicle on that side". Closing speeds use speeds along the lane, so the
    front gap closes when the ego is faster and the rear gap closes when the follower is faster.
    """
    lane = road.network.get_lane(lane_index)
    front, rear = road.neighbour_vehicles(ego, lane_index)
    s_ego = lane.local_coordinates(ego.position)[0]
    v_ego = speed_along_lane(ego, lane)
    front_state = rear_state = None
    if front is not None:
        gap = lane.local_coordinates(front.position)[0] - s_ego - (ego.LENGTH + front.LENGTH) / 2
        front_state = GapState(gap, v_ego - speed_along_lane(front, lane))
    if rear is not None:
        gap = s_ego - lane.local_coordinates(rear.position)[0] - (ego.LENGTH + rear.LENGTH) / 2
        rear_state = GapState(gap, speed_along_lane(rear, lane) - v_ego)
    return front_state, rear_state


@dataclass(frozen=True)
class SafetyState:
    """The safety-relevant quantities of the ego vehicle at one instant."""

    ttc_s: float  # min TTC over the front gap of the current and target lanes and the rear gap of the target lane
    headway_s: float  # time headway to the vehicle ahead on the current lane
    crashed: bool
    on_road: bool
    speed_mps: float
    speed_limit_mps: float


def safety_state(road: Any, ego: Any, speed_limit_mps: float | None = None) -> SafetyState:
    """Measure TTC, time headway, crash, off-road and speed of ``ego`` on ``road``.

    During a lane change (target lane differs from the current one) the target lane's front gap and
    rear gap count too, because those are the vehicles the manoeuvre may cut in on.
    """
    ttc = math.inf
    headway = math.inf
    lane_index = ego.lane_index
    if lane_index is not None:
        front, _ = gap_between(road, ego, lane_index)
        if front is not None:
            ttc = min(ttc, front.ttc_s)
            headway = time_headway(front.gap_m, speed_along_lane(ego, road.network.get_lane(lane_index)))
        target = getattr(ego, "target_lane_index", None)
        if target is not None and tuple(target) != tuple(lane_index):
            target_front, target_rear = gap_between(road, ego, target)
            for state in (target_front, target_rear):
                if state is not None:
                    ttc = min(ttc, state.ttc_s)
    limit = speed_limit_mps
    if limit is None:
        lane_limit = getattr(ego.lane, "speed_limit", None) if getattr(ego, "lane", None) is not None else None
        limit = float(lane_limit) if lane_limit is not None else math.inf
    return SafetyState(
        ttc_s=float(ttc),
        headway_s=float(headway),
        crashed=bool(ego.crashed),
        on_road=bool(ego.on_road),
        speed_mps=float(ego.speed),
        speed_limit_mps=float(limit),
    )


def cost_terms(state: SafetyState, settings: CostSettings) -> dict[str, float]:
    """Return each weighted cost term of one step; the step's cost is their sum."""
    return {
        "collision": settings.collision * float(state.crashed),
        "ttc": settings.ttc * float(state.ttc_s < settings.ttc_threshold_s),
        "headway": settings.headway * float(state.headway_s < settings.headway_threshold_s),
        "offroad": settings.offroad * float(not state.on_road),
        "speed": settings.speed * float(state.speed_mps > state.speed_limit_mps),
    }


class SafetyCostWrapper(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Add the per-step safety cost to ``info`` (``cost``, ``cost_terms``) and the raw safety quantities.

    ``info`` also carries ``ttc`` (capped at ``TTC_CAP_S``), ``headway``, ``ego_speed``,
    ``ego_position`` (x, y in metres), ``ego_lane`` (lane id) and ``crashed``, for the episode
    tracker and the demo panel. The collision term fires once, on the step the crash happens.
    """

    def __init__(self, env: gym.Env, settings: CostSettings | None = None):
        gym.utils.RecordConstructorArgs.__init__(self, settings=settings)
        super().__init__(env)
        self.settings = settings or CostSettings()
        self._was_crashed = False

    def _measure(self) -> tuple[SafetyState, dict[str, float], dict[str, Any]]:
        base = self.env.unwrapped
        state = safety_state(base.road, base.vehicle, self.settings.speed_limit_mps)
        terms = cost_terms(state, self.settings)
        if self._was_crashed:
            terms["collision"] = 0.0
        lane = base.vehicle.lane_index
        extra = {
            "ttc": min(state.ttc_s, TTC_CAP_S),
            "headway": min(state.headway_s, TTC_CAP_S),
            "ego_speed": state.speed_mps,
            "ego_position": np.asarray(base.vehicle.position, dtype=np.float64).copy(),
            "ego_lane": int(lane[2]) if lane is not None else -1,
            "ego_road": (str(lane[0]), str(lane[1])) if lane is not None else ("", ""),
            "on_road": state.on_road,
            "ego_crashed": state.crashed,
        }
        return state, terms, extra

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self._was_crashed = False
        state, _, extra = self._measure()
        info.update(extra)
        info["cost"] = 0.0
        info["cost_terms"] = {name: 0.0 for name in cost_terms(state, self.settings)}
        return obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        state, terms, extra = self._measure()
        self._was_crashed = self._was_crashed or state.crashed
        info.update(extra)
        info["cost_terms"] = terms
        info["cost"] = float(sum(terms.values()))
        return obs, reward, terminated, truncated, info
