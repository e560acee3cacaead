"""Simulator validation on the shipped ml-latest-small artefacts: the logged-data model beats random,
and the shipped REINFORCE re-ranker beats the logged-data model."""

import numpy as np
import pytest

from apps.recommendation.pipeline import shipped_state, simulate


@pytest.fixture(scope="module")
def state():
    return shipped_state()


def test_shipped_preference_model_auc(state):
    # AUC of held-out test items against 100 random unseen items each.
    assert state.stages["preference"].info["heldout_auc"] > 0.85


def test_base_beats_random_on_user_slice(state):
    users = state.data.test_users()[:100]
    base = simulate(state, "base", 300, seed=0, users=users)
    random = simulate(state, "random", 300, seed=0, users=users)
    # Measured with the shipped artefacts: return 3.59 (base) vs 2.51 (random), CTR 0.069 vs 0.050.
    # A simulator in which relevance does not dominate (rotation beats the logged-data model)
    # fails the 20% margin.
    assert base["sim_return_mean"] == pytest.approx(3.59, abs=0.1)
    assert random["sim_return_mean"] == pytest.approx(2.51, abs=0.1)
    assert base["sim_return_mean"] > 1.2 * random["sim_return_mean"]
    assert base["sim_ctr"] > 1.2 * random["sim_ctr"]


def test_shipped_reinforce_reranker_meets_return_target(state, one_torch_thread):
    # The scenario's evaluation: 5 seeds x 100 sessions over all users with a training history.
    # Measured with the shipped weights (20000 steps): return 4.242 vs 3.538, +19.9%.
    seeds = [10000, 10001, 10002, 10003, 10004]
    rl = np.mean([simulate(state, "reinforce_topk", 100, seed)["sim_return_mean"] for seed in seeds])
    base = np.mean([simulate(state, "base", 100, seed)["sim_return_mean"] for seed in seeds])
    assert base == pytest.approx(3.538, abs=0.02)
    assert rl == pytest.approx(4.242, abs=0.02)
    assert rl >= 1.10 * base
