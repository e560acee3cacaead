"""DQN and Double DQN targets on a hand-made batch."""

import torch

from shared.agents.dqn import dqn_target


def test_dqn_target_uses_target_max():
    rewards = torch.tensor([1.0, 0.5])
    discounts = torch.tensor([0.9, 0.0])
    next_q_target = torch.tensor([[1.0, 3.0], [5.0, 2.0]])
    target = dqn_target(rewards, discounts, next_q_target, None)
    # 1 + 0.9 * max(1, 3) = 3.7; the second transition terminated: 0.5.
    assert torch.allclose(target, torch.tensor([3.7, 0.5]))


def test_double_dqn_target_uses_online_argmax():
    rewards = torch.tensor([1.0, 0.0])
    discounts = torch.tensor([0.9, 0.5])
    next_q_target = torch.tensor([[1.0, 3.0], [5.0, 2.0]])
    next_q_online = torch.tensor([[2.0, 0.0], [0.0, 4.0]])
    target = dqn_target(rewards, discounts, next_q_target, next_q_online)
    # The online net picks action 0 for the first row -> 1 + 0.9 * 1 = 1.9 (plain DQN: 3.7);
    # action 1 for the second row -> 0 + 0.5 * 2 = 1.0 (plain DQN: 2.5).
    assert torch.allclose(target, torch.tensor([1.9, 1.0]))
