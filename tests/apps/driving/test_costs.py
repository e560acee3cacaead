"""TTC, time headway and the per-step safety cost on hand-placed vehicles."""

from __future__ import annotations

import math

import pytest
from highway_env.road.road import Road, RoadNetwork
from highway_env.vehicle.kinematics import Vehicle

from apps.driving.costs import CostSettings, SafetyCostWrapper, gap_between, safety_state, time_headway, time_to_collision
from tests.apps.driving.helpers import empty_highway, place, set_ego


def straight_road() -> Road:
    return Road(network=RoadNetwork.straight_road_network(3, speed_limit=30))


def test_ttc_and_headway_hand_placed():
    road = straight_road()
    ego = Vehicle(road, [100.0, 0.0], 0.0, 25.0)
    front = Vehicle(road, [130.0, 0.0], 0.0, 20.0)
    rear = Vehicle(road, [80.0, 0.0], 0.0, 30.0)
    road.vehicles += [ego, front, rear]
    # Bumper-to-bumper gaps: 30 m and 20 m between centres minus one 5 m car length.
    front_state, rear_state = gap_between(road, ego, ego.lane_index)
    assert front_state.gap_m == pytest.approx(25.0)
    assert front_state.closing_speed_mps == pytest.approx(5.0)
    assert front_state.ttc_s == pytest.approx(25.0 / 5.0)
    assert rear_state.gap_m == pytest.approx(15.0)
    assert rear_state.ttc_s == pytest.approx(15.0 / 5.0)
    state = safety_state(road, ego)
    assert state.ttc_s == pytest.approx(5.0)
    assert state.headway_s == pytest.approx(25.0 / 25.0)
    assert state.speed_limit_mps == pytest.approx(30.0)


def test_ttc_infinite_when_opening():
    road = straight_road()
    ego = Vehicle(road, [100.0, 4.0], 0.0, 20.0)
    front = Vehicle(road, [120.0, 4.0], 0.0, 28.0)
    road.vehicles += [ego, front]
    state = safety_state(road, ego)
    assert math.isinf(state.ttc_s)
    assert state.headway_s == pytest.approx(15.0 / 20.0)


def test_lane_change_counts_target_lane():
    road = straight_road()
    ego = Vehicle(road, [100.0, 0.0], 0.0, 25.0)
    alongside = Vehicle(road, [103.0, 4.0], 0.0, 25.0)
    road.vehicles += [ego, alongside]
    assert math.isinf(safety_state(road, ego).ttc_s)
    ego.target_lane_index = ("0", "1", 1)
    # 3 m between centres is less than a car length: the gap is already closed.
    assert safety_state(road, ego).ttc_s == 0.0


def test_scalar_formulas():
    assert time_to_collision(30.0, 10.0) == pytest.approx(3.0)
    assert math.isinf(time_to_collision(30.0, -1.0))
    assert time_to_collision(-0.5, 3.0) == 0.0
    assert time_headway(12.0, 24.0) == pytest.approx(0.5)
    assert math.isinf(time_headway(12.0, 0.0))


def test_cost_terms_fire_on_scripted_crash():
    env = SafetyCostWrapper(empty_highway(), CostSettings(collision=1.0, ttc=1.0, ttc_threshold_s=1.5, headway=0.0, offroad=1.0))
    env.reset(seed=3)
    set_ego(env, 25.0)
    place(env, 17.0, 1, 15.0)  # 12 m bumper gap closing at 10 m/s.
    _, _, terminated, _, info = env.step(1)  # IDLE: the ego keeps 25 m/s and does not brake.
    # After 1 s the gap is 12 - 10 = 2 m, so TTC = 2 / 10 = 0.2 s: below 1.5 s, no crash yet.
    assert terminated is False
    assert info["ttc"] == pytest.approx(0.2, abs=0.05)
    assert info["cost_terms"] == {"collision": 0.0, "ttc": 1.0, "headway": 0.0, "offroad": 0.0, "speed": 0.0}
    assert info["cost"] == pytest.approx(1.0)
    _, _, terminated, _, info = env.step(1)
    assert info["ego_crashed"] is True
    assert terminated is True
    assert info["cost_terms"]["collision"] == 1.0
    assert info["cost"] == pytest.approx(sum(info["cost_terms"].values()))
    assert info["cost"] >= 1.0
    env.close()


def test_cost_terms_fire_on_scripted_tailgate():
    settings = CostSettings(collision=1.0, ttc=1.0, headway=1.0, headway_threshold_s=1.0)
    env = SafetyCostWrapper(empty_highway(), settings)
    env.reset(seed=4)
    set_ego(env, 25.0)
    place(env, 15.0, 1, 25.0)  # Same speed, 10 m bumper gap: headway 0.4 s, TTC never.
    _, _, _, _, info = env.step(1)
    assert info["ego_crashed"] is False
    assert info["headway"] == pytest.approx(10.0 / 25.0, abs=0.05)
    assert info["cost_terms"]["headway"] == 1.0
    assert info["cost_terms"]["ttc"] == 0.0
    assert info["cost_terms"]["collision"] == 0.0
    assert info["cost"] == pytest.approx(1.0)
    env.close()


def test_collision_term_counts_once():
    env = SafetyCostWrapper(empty_highway(), CostSettings(ttc=0.0))
    env.reset(seed=3)
    set_ego(env, 25.0)
    place(env, 12.0, 1, 0.0)  # A stopped car 7 m ahead: the ego hits it within the first step.
    _, _, _, _, first = env.step(1)
    _, _, _, _, second = env.step(1)
    assert first["cost_terms"]["collision"] == 1.0
    assert second["cost_terms"]["collision"] == 0.0
    env.close()


def test_speed_limit_term():
    env = SafetyCostWrapper(empty_highway(), CostSettings(ttc=0.0, speed=1.0, speed_limit_mps=22.0))
    env.reset(seed=5)
    set_ego(env, 25.0)
    _, _, _, _, info = env.step(1)
    assert info["cost_terms"]["speed"] == 1.0
    env.close()
