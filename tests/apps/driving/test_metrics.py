"""The driving episode tracker on a scripted info sequence with hand-computed metrics."""

from __future__ import annotations

import numpy as np
import pytest

from apps.driving.metrics import DrivingEpisodeTracker
from tests.apps.driving.helpers import empty_highway


def info(x: float, lane: int, speed: float, ttc: float, headway: float, cost: float, crashed: bool = False, on_road: bool = True) -> dict:
    return {
        "ego_position": np.array([x, 4.0 * lane]),
        "ego_road": ("0", "1"),
        "ego_lane": lane,
        "ego_speed": speed,
        "ttc": ttc,
        "headway": headway,
        "cost": cost,
        "ego_crashed": crashed,
        "on_road": on_road,
    }


def test_tracker_hand_computed():
    env = empty_highway()  # policy_frequency 1 Hz, so dt = 1 s
    tracker = DrivingEpisodeTracker(ttc_threshold_s=1.5, headway_threshold_s=1.0)
    tracker.reset(env, None, info(0.0, 1, 20.0, 10.0, 10.0, 0.0))
    tracker.step(env, 1, 0.5, False, False, info(20.0, 1, 20.0, 3.0, 2.0, 0.0))
    tracker.step(env, 0, 0.7, False, False, info(45.0, 0, 25.0, 1.0, 0.8, 1.0))
    tracker.step(env, 1, 0.9, False, True, info(70.0, 0, 25.0, 0.5, 0.5, 1.0))
    result = tracker.result()
    assert result["return_mean"] == pytest.approx(2.1)
    assert result["cost_mean"] == pytest.approx(2.0)
    assert result["collision_rate"] == 0.0
    assert result["offroad_rate"] == 0.0
    assert result["ttc_violation_rate"] == pytest.approx(2 / 3)
    assert result["headway_violation_rate"] == pytest.approx(2 / 3)
    assert result["min_ttc_mean"] == pytest.approx(0.5)
    assert result["speed_mean"] == pytest.approx(70 / 3)
    # The lateral move of 4 m counts in the path length: 20 + sqrt(25^2 + 4^2) + 25.
    assert result["progress_m_mean"] == pytest.approx(20 + np.hypot(25, 4) + 25)
    assert result["lane_changes_mean"] == 1.0
    # Accelerations 0, 5, 0 m/s^2 give jerks |5 - 0| and |0 - 5| per second.
    assert result["jerk_mean"] == pytest.approx(5.0)
    assert "success_rate" not in result
    env.close()


def test_tracker_collision_and_goal():
    env = empty_highway()
    tracker = DrivingEpisodeTracker(goal="merge")
    tracker.reset(env, None, info(0.0, 1, 20.0, 10.0, 10.0, 0.0))
    tracker.step(env, 1, 0.0, True, False, info(10.0, 1, 0.0, 0.0, 0.0, 2.0, crashed=True))
    result = tracker.result()
    assert result["collision_rate"] == 1.0
    assert result["success_rate"] == 0.0
    tracker.reset(env, None, info(0.0, 1, 20.0, 10.0, 10.0, 0.0))
    tracker.step(env, 1, 1.0, True, False, info(380.0, 1, 25.0, 10.0, 10.0, 0.0))
    assert tracker.result()["success_rate"] == 1.0
    env.close()
