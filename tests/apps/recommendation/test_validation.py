"""Simulator validation on the shipped ml-latest-small artefacts: the logged-data model beats random,
and the shipped REINFORCE re-ranker beats the logged-data model without losing NDCG@10."""

import numpy as np
import pytest

from apps.recommendation.metrics import ranking_metrics
from apps.recommendation.pipeline import ranker_scores, shipped_state, simulate, validation_scorer
from apps.recommendation.reranker import RerankPolicy


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
    # Measured with the shipped weights (20000 steps, KL penalty 10, iterate chosen on validation
    # NDCG@10): return 4.580 vs 3.538, +29.5%.
    seeds = [10000, 10001, 10002, 10003, 10004]
    rl = np.mean([simulate(state, "reinforce_topk", 100, seed)["sim_return_mean"] for seed in seeds])
    base = np.mean([simulate(state, "base", 100, seed)["sim_return_mean"] for seed in seeds])
    assert base == pytest.approx(3.538, abs=0.02)
    assert rl == pytest.approx(4.580, abs=0.02)
    assert rl >= 1.10 * base


def test_shipped_reinforce_reranker_keeps_ndcg(state, one_torch_thread):
    # Test-split NDCG@10 of the session-start ranking, as the scenario reports it.
    # Measured with the shipped weights: 0.0250 vs 0.0232 for the base ranking (+8.0%).
    users = state.data.test_users()
    targets = state.data.test_item[users]
    candidates = state.base.items[users]
    popularity = state.data.item_popularity()
    rng = np.random.default_rng(0)
    rl, _ = ranking_metrics(ranker_scores(state, "reinforce_topk", users, rng), candidates, targets, state.embeddings, popularity)
    base, _ = ranking_metrics(ranker_scores(state, "base", users, rng), candidates, targets, state.embeddings, popularity)
    assert base["ndcg@10"] == pytest.approx(0.0232, abs=0.0002)
    assert rl["ndcg@10"] == pytest.approx(0.0250, abs=0.0002)
    assert rl["ndcg@10"] >= 0.95 * base["ndcg@10"]


def test_shipped_validation_candidates_contain_validation_item(state):
    # The test candidates exclude each user's validation item; the validation candidates may hold it.
    users = np.flatnonzero(state.data.valid_item >= 0)
    in_test = (state.base.items[users] == state.data.valid_item[users, None]).any(1)
    in_valid = (state.base.valid_items[users] == state.data.valid_item[users, None]).any(1)
    assert not in_test.any()
    assert int(in_valid.sum()) == 107


def test_shipped_reinforce_reranker_validation_ndcg(state, one_torch_thread):
    # The quantity the REINFORCE trainer selects its iterate with. Measured with the shipped
    # artefacts: 0.0246 for the re-ranker vs 0.0202 for the untrained policy (the base ranking).
    score = validation_scorer(state)
    base = score(RerankPolicy(state.embeddings.shape[1], state.settings.reranker.hidden_size))
    rl = score(state.policies["reinforce_topk"])
    assert base == pytest.approx(0.0202, abs=0.0002)
    assert rl == pytest.approx(0.0246, abs=0.0002)
    assert rl >= state.settings.reranker.valid_ndcg_ratio * base
