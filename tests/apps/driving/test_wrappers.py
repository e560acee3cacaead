"""Every driving wrapper passes Gymnasium's env checker; seeded resets repeat the traffic; perturbations act."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from apps.driving.baselines import IDMEgoWrapper
from apps.driving.costs import SafetyCostWrapper
from apps.driving.perturbations import ActionDelay, AggressiveTraffic, KinematicsDropout, KinematicsNoise, scale_density
from apps.driving.shield import MetaActionShield, ShieldSettings
from tests.apps.driving.helpers import empty_highway

import gymnasium as gym

SMALL_TRAFFIC = {"vehicles_count": 8, "duration": 5}


def small_highway() -> gym.Env:
    return gym.make("highway-fast-v0", config=SMALL_TRAFFIC)


WRAPPERS = {
    "cost": lambda env: SafetyCostWrapper(env),
    "shield": lambda env: MetaActionShield(SafetyCostWrapper(env), ShieldSettings(enabled=True)),
    "idm_ego": lambda env: IDMEgoWrapper(env),
    "obs_noise": lambda env: KinematicsNoise(env, 0.1, seed=0),
    "obs_dropout": lambda env: KinematicsDropout(env, 0.5, seed=0),
    "aggressive": lambda env: AggressiveTraffic(env, 0.5),
    "action_delay": lambda env: ActionDelay(env, 1),
}


@pytest.mark.parametrize("name", sorted(WRAPPERS))
def test_check_env(name):
    env = WRAPPERS[name](small_highway())
    check_env(env, skip_render_check=True)
    env.close()


def traffic(env: gym.Env) -> np.ndarray:
    return np.array([[*v.position, v.speed, v.heading] for v in env.unwrapped.road.vehicles])


def test_seeded_reset_repeats_traffic():
    env = SafetyCostWrapper(small_highway())
    env.reset(seed=11)
    first = traffic(env)
    env.step(1)
    env.reset(seed=11)
    second = traffic(env)
    env.reset(seed=12)
    third = traffic(env)
    assert np.array_equal(first, second)
    assert first.shape != third.shape or not np.allclose(first, third)
    env.close()


def test_aggressive_seeded_repeat():
    from highway_env.vehicle.behavior import AggressiveVehicle

    env = AggressiveTraffic(small_highway(), 0.5)
    env.reset(seed=5)
    kinds = [type(v).__name__ for v in env.unwrapped.road.vehicles]
    env.reset(seed=5)
    assert kinds == [type(v).__name__ for v in env.unwrapped.road.vehicles]
    full = AggressiveTraffic(small_highway(), 1.0)
    full.reset(seed=5)
    others = [v for v in full.unwrapped.road.vehicles if v is not full.unwrapped.vehicle]
    assert others and all(isinstance(v, AggressiveVehicle) for v in others)
    env.close()
    full.close()


def test_dropout_keeps_ego_row():
    env = KinematicsDropout(small_highway(), 1.0, seed=0)
    obs, _ = env.reset(seed=0)
    assert obs[0, 0] == 1.0  # presence of the ego
    assert np.all(obs[1:] == 0.0)
    env.close()


def test_noise_changes_features_not_presence():
    clean_env = small_highway()
    noisy_env = KinematicsNoise(small_highway(), 0.2, seed=0)
    clean, _ = clean_env.reset(seed=3)
    noisy, _ = noisy_env.reset(seed=3)
    present = clean[:, 0] > 0
    assert np.array_equal(noisy[:, 0], clean[:, 0])
    assert not np.allclose(noisy[present, 1:], clean[present, 1:])
    # Normalised features span [-1, 1], so sigma = 0.2 * 2 = 0.4.
    assert np.std(noisy[present, 1:] - clean[present, 1:]) == pytest.approx(0.4, rel=0.6)
    clean_env.close()
    noisy_env.close()


def test_action_delay_executes_previous_action():
    env = ActionDelay(SafetyCostWrapper(empty_highway()), 1)
    env.reset(seed=0)
    ego = env.unwrapped.vehicle
    env.step(0)  # LANE_LEFT is held back; IDLE runs.
    assert ego.target_lane_index[2] == 1
    env.step(1)  # Now LANE_LEFT runs.
    assert env.unwrapped.vehicle.target_lane_index[2] == 0
    env.close()


def test_idm_ego_drives_itself():
    from highway_env.vehicle.behavior import IDMVehicle

    env = IDMEgoWrapper(SafetyCostWrapper(small_highway()))
    env.reset(seed=2)
    assert isinstance(env.unwrapped.vehicle, IDMVehicle)
    assert env.unwrapped.vehicle.target_speed == 30.0
    total = 0
    for _ in range(5):
        _, _, terminated, truncated, info = env.step(0)
        total += 1
        if terminated or truncated:
            break
    assert info["ego_crashed"] is False
    env.close()


def test_scale_density():
    defaults = {"vehicles_count": 20, "vehicles_density": 1.0}
    assert scale_density({}, defaults, 2.0) == {"vehicles_count": 40, "vehicles_density": 2.0}
    assert scale_density({"vehicles_count": 5}, defaults, 0.5) == {"vehicles_count": 2, "vehicles_density": 0.5}
    assert scale_density({}, {"spawn_probability": 0.6}, 2.0) == {"spawn_probability": 1.0}
