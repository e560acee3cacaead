"""Ranking metrics on hand-made rankings, including ties that must not inflate accuracy."""

import math

import numpy as np
import pytest

from apps.recommendation.metrics import accuracy_at_k, intra_list_distance, pessimistic_rank, ranking_metrics, top_k


def test_pessimistic_rank_counts_ties_above():
    scores = np.array([0.9, 0.5, 0.5, 0.5, 0.1])
    assert pessimistic_rank(scores, 0) == 1
    assert pessimistic_rank(scores, 1) == 4
    assert pessimistic_rank(scores, 3) == 4
    assert pessimistic_rank(scores, 4) == 5


def test_constant_scores_rank_last():
    # A ranker that scores everything the same must not get credit for the held-out item.
    assert pessimistic_rank(np.zeros(100), 0) == 100


def test_accuracy_at_rank_four():
    values = accuracy_at_k(4, k=10)
    assert values["ndcg@10"] == pytest.approx(1 / math.log2(5))
    assert values["mrr@10"] == pytest.approx(0.25)
    assert values["hit@10"] == 1.0
    assert values["recall@10"] == 1.0
    assert accuracy_at_k(11, k=10) == {"ndcg@10": 0.0, "recall@10": 0.0, "mrr@10": 0.0, "hit@10": 0.0}
    assert accuracy_at_k(float("inf"), k=10)["hit@10"] == 0.0


def test_top_k_breaks_ties_at_random():
    scores = np.array([1.0, 1.0, 1.0, 0.0])
    firsts = {int(top_k(scores, 1, np.random.default_rng(seed))[0]) for seed in range(40)}
    assert firsts == {0, 1, 2}


def test_intra_list_distance_hand_computed():
    # Unit vectors at 0, 90 and 180 degrees: cosines 0, -1, 0, so distances 1, 2, 1 and mean 4/3.
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    assert intra_list_distance(vectors) == pytest.approx(4 / 3)
    assert intra_list_distance(vectors[:1]) == 0.0


def test_ranking_metrics_on_hand_made_ranking():
    # Two users, four candidates each, top 2 (k=2).
    candidates = np.array([[10, 11, 12, 13], [20, 21, 22, 23]])
    # User 0: target 12 tied with 11 for second place -> pessimistic rank 3, a miss at k=2.
    # User 1: target 20 strictly first -> rank 1, ndcg 1, mrr 1.
    scores = np.array([[0.9, 0.5, 0.5, 0.1], [0.8, 0.2, 0.3, 0.1]])
    targets = np.array([12, 20])
    embeddings = np.zeros((30, 2))
    embeddings[:, 0] = 1.0
    popularity = np.full(30, 1 / 30)
    means, per_user = ranking_metrics(scores, candidates, targets, embeddings, popularity, k=2, seed=0)
    assert per_user["ndcg@2"].tolist() == [0.0, 1.0]
    assert means["ndcg@2"] == pytest.approx(0.5)
    assert means["mrr@2"] == pytest.approx(0.5)
    assert means["hit@2"] == pytest.approx(0.5)
    assert means["recall@2"] == pytest.approx(0.5)
    # Identical embeddings: no diversity. Uniform popularity: novelty is log2(30).
    assert means["ild@2"] == pytest.approx(0.0)
    assert means["novelty@2"] == pytest.approx(math.log2(30))
    # Top 2 are {10, 11 or 12} and {20, 22}: four distinct items of 30.
    assert means["coverage@2"] == pytest.approx(4 / 30)


def test_target_outside_candidates_is_a_miss():
    means, _ = ranking_metrics(np.array([[3.0, 2.0, 1.0]]), np.array([[1, 2, 3]]), np.array([7]), np.eye(8), np.full(8, 1 / 8), k=2)
    assert means["hit@2"] == 0.0
    assert means["ndcg@2"] == 0.0
