"""The meta-action shield: unsafe lane changes and acceleration are replaced, safe actions pass."""

from __future__ import annotations

import pytest

from apps.driving.costs import SafetyCostWrapper
from apps.driving.shield import MetaActionShield, ShieldSettings
from tests.apps.driving.helpers import empty_highway, place, set_ego

LANE_LEFT, IDLE, LANE_RIGHT, FASTER, SLOWER = range(5)


def shielded(**settings):
    return MetaActionShield(SafetyCostWrapper(empty_highway()), ShieldSettings(enabled=True, **settings))


def test_blocks_lane_change_into_occupied_gap():
    env = shielded()
    env.reset(seed=0)
    set_ego(env, 25.0)
    place(env, 2.0, 0, 25.0)  # Alongside on the left lane (lane 0): the gap is closed.
    assert env.predicted_ttc(LANE_LEFT) == 0.0
    assert not env.is_safe(LANE_LEFT)
    _, _, _, _, info = env.step(LANE_LEFT)
    assert info["shield_intervened"] is True
    assert info["shield_action"] != LANE_LEFT
    assert env.unwrapped.vehicle.target_lane_index[2] == 1
    assert info["ego_crashed"] is False
    env.close()


def test_blocks_lane_change_in_front_of_fast_follower():
    env = shielded(ttc_threshold_s=1.5)
    env.reset(seed=0)
    set_ego(env, 20.0)
    # Right lane follower 25 m behind (20 m bumper gap) closing at 10 m/s: TTC is 2.0 s now, but
    # after the 1 s step the gap is 10 m, so the predicted TTC is 10 / 10 = 1.0 s < 1.5 s.
    place(env, -25.0, 2, 30.0)
    assert env.predicted_ttc(LANE_RIGHT) == pytest.approx(1.0)
    assert env.safe_action(LANE_RIGHT) != LANE_RIGHT
    env.close()


def test_never_lets_scripted_unsafe_lane_change_through():
    env = shielded()
    env.reset(seed=1)
    set_ego(env, 25.0)
    left = place(env, 1.0, 0, 25.0)
    right = place(env, -1.0, 2, 25.0)
    for _ in range(5):
        for action in (LANE_LEFT, LANE_RIGHT):
            assert env.safe_action(action) not in (LANE_LEFT, LANE_RIGHT)
        _, _, terminated, _, info = env.step(LANE_LEFT)
        assert info["shield_intervened"] is True
        assert info["ego_crashed"] is False
        assert env.unwrapped.vehicle.lane_index[2] == 1
        # Keep the neighbours beside the ego, as a scripted traffic jam would.
        ego = env.unwrapped.vehicle
        left.position[0] = ego.position[0] + 1.0
        right.position[0] = ego.position[0] - 1.0
        left.speed = right.speed = ego.speed
        assert not terminated
    assert env.interventions == 5
    env.close()


def test_allows_safe_lane_change():
    env = shielded()
    env.reset(seed=0)
    set_ego(env, 25.0)
    _, _, _, _, info = env.step(LANE_LEFT)
    assert info["shield_intervened"] is False
    assert info["shield_action"] == LANE_LEFT
    assert env.unwrapped.vehicle.target_lane_index[2] == 0
    env.close()


def test_blocks_faster_on_short_headway():
    env = shielded(headway_threshold_s=1.0)
    env.reset(seed=0)
    set_ego(env, 25.0)
    place(env, 25.0, 1, 25.0)  # 20 m bumper gap: headway at the next target speed 30 m/s is 0.67 s.
    assert not env.is_safe(FASTER)
    assert env.is_safe(IDLE)
    _, _, _, _, info = env.step(FASTER)
    assert info["shield_intervened"] is True
    assert info["shield_action"] == IDLE
    env.close()


def test_predicts_ttc_at_step_end():
    env = shielded()
    env.reset(seed=0)
    set_ego(env, 25.0)
    place(env, 45.0, 1, 10.0)  # 40 m bumper gap closing at 15 m/s: TTC now 2.67 s.
    # IDLE keeps 25 m/s: after 1 s the gap is 40 - 15 = 25 m, TTC 25 / 15 = 1.67 s.
    assert env.predicted_ttc(IDLE) == pytest.approx(25.0 / 15.0)
    # SLOWER tracks 20 m/s: mean closing speed 12.5 m/s, gap 27.5 m, closing 10 m/s at the end.
    assert env.predicted_ttc(SLOWER) == pytest.approx(27.5 / 10.0)
    # FASTER tracks 30 m/s: mean closing speed 17.5 m/s, gap 22.5 m, closing 20 m/s at the end.
    assert env.predicted_ttc(FASTER) == pytest.approx(22.5 / 20.0)
    assert not env.is_safe(FASTER)
    assert env.is_safe(IDLE)
    env.close()


def test_falls_back_to_slower_when_idle_unsafe():
    env = shielded(ttc_threshold_s=1.5)
    env.reset(seed=0)
    set_ego(env, 25.0)
    place(env, 20.0, 1, 10.0)  # 15 m bumper gap closing at 15 m/s: TTC 1.0 s even when idling.
    place(env, 0.0, 0, 25.0)
    place(env, 0.0, 2, 25.0)
    assert not env.is_safe(IDLE)
    assert env.safe_action(FASTER) == SLOWER
    env.close()


def test_rejects_continuous_env():
    import gymnasium as gym

    env = gym.make("highway-fast-v0", config={"action": {"type": "ContinuousAction"}})
    with pytest.raises(ValueError, match="DiscreteMetaAction"):
        MetaActionShield(env)
    env.close()
