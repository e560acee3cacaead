"""Re-ranker pieces with hand-computed values: the slate probability and the policy's start point."""

import math

import numpy as np
import pytest
import torch

from apps.recommendation.reranker import RerankPolicy, plackett_luce_log_prob, sample_slate, to_tensors
from apps.recommendation.simulator import RecommendationSessionEnv


def test_plackett_luce_log_prob_hand_computed():
    # Weights 1, 2, 3: P(slate [2, 1]) = 3/6 * 2/3 = 1/3.
    logits = torch.log(torch.tensor([[1.0, 2.0, 3.0]]))
    assert float(plackett_luce_log_prob(logits, torch.tensor([[2, 1]]))) == pytest.approx(math.log(1 / 3))
    # P(slate [0, 1]) = 1/6 * 2/5.
    assert float(plackett_luce_log_prob(logits, torch.tensor([[0, 1]]))) == pytest.approx(math.log(1 / 15))


def test_sample_slate_has_no_repeats():
    slate = sample_slate(np.zeros(20), 10, np.random.default_rng(0))
    assert len(set(slate.tolist())) == 10


def test_untrained_policy_ranks_like_base(world):
    env = RecommendationSessionEnv(world)
    obs, _ = env.reset(seed=0)
    policy = RerankPolicy(world.embeddings.shape[1], 16)
    logits, value = policy(to_tensors([obs]))
    order = np.argsort(-logits[0].detach().numpy(), kind="stable")
    assert order.tolist() == np.argsort(-obs["base_scores"], kind="stable").tolist()
    assert value.shape == (1,)
