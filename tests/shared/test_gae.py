"""GAE and returns on hand-computed cases, with truncation, termination and autoreset dummies."""

import numpy as np
import pytest

from shared.buffers import compute_gae, returns_to_go


def test_gae_three_steps_truncation_and_termination():
    # One env, three steps. Step 0 continues, step 1 is truncated (time limit), step 2 is the
    # autoreset dummy. A second env terminates on step 0 and continues afterwards.
    gamma, lam = 0.9, 0.5
    rewards = np.array([[1.0, 2.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    # values[t] = V(obs_t); the obs after the truncated step 1 is the final obs stored at step 2.
    values = np.array([[0.5, 1.0], [0.4, 9.0], [0.3, 0.2]], dtype=np.float32)
    terminations = np.array([[0, 1], [0, 0], [0, 0]], dtype=np.float32)
    dones = np.array([[0, 1], [1, 0], [0, 0]], dtype=np.float32)
    valid = np.array([[True, True], [True, False], [False, True]])
    last_value = np.array([7.0, 0.6], dtype=np.float32)

    advantages, returns = compute_gae(rewards, values, terminations, dones, valid, last_value, gamma, lam)

    # Env 0. Step 1 truncated: delta1 = 1 + 0.9 * V(final obs) - 0.4 = 1 + 0.27 - 0.4 = 0.87,
    # and no advantage flows in from the dummy step.
    assert advantages[1, 0] == pytest.approx(0.87)
    # Step 0: delta0 = 1 + 0.9 * 0.4 - 0.5 = 0.86; A0 = 0.86 + 0.9 * 0.5 * 0.87 = 1.2515.
    assert advantages[0, 0] == pytest.approx(1.2515)
    # The dummy step gets nothing.
    assert advantages[2, 0] == 0.0
    assert returns[2, 0] == 0.0

    # Env 1. Step 0 terminated: delta0 = 2 - 1.0 = 1.0 (no bootstrap, even though V(next) = 9).
    assert advantages[0, 1] == pytest.approx(1.0)
    # Step 1 is the dummy; step 2 bootstraps from last_value: 1 + 0.9 * 0.6 - 0.2 = 1.34.
    assert advantages[1, 1] == 0.0
    assert advantages[2, 1] == pytest.approx(1.34)
    # Returns are advantages plus values on valid steps.
    assert returns[0, 0] == pytest.approx(1.2515 + 0.5)
    assert returns[2, 1] == pytest.approx(1.34 + 0.2)


def test_truncation_bootstrap_reaches_infinite_horizon_value():
    # Reward 1 every step and only a time limit: the true value is 1 / (1 - gamma) everywhere.
    gamma = 0.99
    true_value = 1.0 / (1.0 - gamma)
    steps = 6
    rewards = np.ones((steps, 1), dtype=np.float32)
    values = np.full((steps, 1), true_value, dtype=np.float32)
    terminations = np.zeros((steps, 1), dtype=np.float32)
    dones = np.zeros((steps, 1), dtype=np.float32)
    dones[4, 0] = 1.0  # truncated at step 4; step 5 is the dummy
    valid = np.ones((steps, 1), dtype=bool)
    valid[5, 0] = False
    last_value = np.array([true_value], dtype=np.float32)

    _, returns = compute_gae(rewards, values, terminations, dones, valid, last_value, gamma, 0.95)

    assert returns[4, 0] == pytest.approx(true_value, rel=1e-5)
    assert returns[0, 0] == pytest.approx(true_value, rel=1e-5)

    # Treating the cut as a termination would give a target of 1 at the last step.
    terminations[4, 0] = 1.0
    _, wrong = compute_gae(rewards, values, terminations, dones, valid, last_value, gamma, 0.95)
    assert wrong[4, 0] == pytest.approx(1.0)


def test_returns_to_go_with_bootstrap():
    returns = returns_to_go(np.array([1.0, 2.0, 3.0]), gamma=0.5, bootstrap=4.0)
    # 3 + 0.5 * 4 = 5; 2 + 0.5 * 5 = 4.5; 1 + 0.5 * 4.5 = 3.25
    assert returns.tolist() == pytest.approx([3.25, 4.5, 5.0])
