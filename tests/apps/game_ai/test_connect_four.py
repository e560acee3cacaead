"""Connect Four: the batched board against PettingZoo, reward attribution, masking and the agent API."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from apps.game_ai.connect_four import (
    ConnectFourAgent,
    ConnectFourBatch,
    ConnectFourNet,
    load_policy,
    make_pettingzoo_env,
    masked_log_probs_and_entropy,
    pettingzoo_planes,
    play_pettingzoo_game,
    safety_planes,
    save_policy,
    tactical_planes,
)
from apps.game_ai.heuristics import OneStepLookaheadPlayer, RandomPlayer, completing_columns
from apps.game_ai.selfplay import SelfPlaySettings, SelfPlayTrainer, play_match
from shared.checkpoints import save_checkpoint
from shared.errors import CheckpointError

SHIPPED = "apps/game_ai/checkpoints/connect_four"


def pettingzoo_board(env) -> np.ndarray:
    return np.array(env.unwrapped.board, dtype=np.int8).reshape(6, 7)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_batch_board_matches_pettingzoo(seed):
    rng = np.random.default_rng(seed)
    env = make_pettingzoo_env()
    env.reset(seed=seed)
    batch = ConnectFourBatch(1)
    game = np.array([0])
    for agent in env.agent_iter():
        observation, reward, termination, truncation, _ = env.last()
        if termination or truncation:
            env.step(None)
            continue
        assert np.array_equal(pettingzoo_planes(observation["observation"]), batch.planes()[0])
        assert np.array_equal(observation["action_mask"].astype(bool), batch.legal_mask()[0])
        column = int(rng.choice(np.flatnonzero(observation["action_mask"])))
        won, draw = batch.play(game, np.array([column]))
        env.step(column)
        assert np.array_equal(pettingzoo_board(env), batch.board[0])
        if won[0]:
            assert env.rewards[agent] == 1
        if draw[0]:
            assert all(value == 0 for value in env.rewards.values())
        assert bool(won[0] or draw[0]) == all(env.terminations.values())
    env.close()


def test_scripted_win_rewards_the_mover_player_0():
    env = make_pettingzoo_env()
    env.reset(seed=0)
    # player_0 fills the bottom row from column 0; player_1 stacks on columns 0-2.
    script = [0, 0, 1, 1, 2, 2, 3]
    for column in script:
        env.step(column)
    assert env.rewards == {"player_0": 1, "player_1": -1}
    assert env.terminations == {"player_0": True, "player_1": True}
    env.close()


def test_scripted_win_rewards_the_mover_player_1():
    env = make_pettingzoo_env()
    env.reset(seed=0)
    # player_1 builds a vertical four in column 6 while player_0 spreads out.
    script = [0, 6, 1, 6, 0, 6, 1, 6]
    for column in script:
        env.step(column)
    assert env.rewards == {"player_0": -1, "player_1": 1}


def test_batch_board_reports_the_mover_as_winner():
    batch = ConnectFourBatch(1)
    game = np.array([0])
    results = [batch.play(game, np.array([column])) for column in [0, 6, 1, 6, 0, 6, 1, 6]]
    assert [bool(won[0]) for won, _ in results] == [False] * 7 + [True]
    assert batch.board[0, 2:, 6].tolist() == [2, 2, 2, 2]


def test_play_pettingzoo_game_returns_player_0_reward():
    first = iter([0, 1, 2, 3])
    second = iter([0, 1, 2])
    reward, plies = play_pettingzoo_game(make_pettingzoo_env(), lambda obs, mask: next(first), lambda obs, mask: next(second), seed=0)
    assert reward == 1.0
    assert plies == 7


def test_full_column_is_rejected_by_batch_board():
    batch = ConnectFourBatch(1)
    for _ in range(6):
        batch.play(np.array([0]), np.array([3]))
    assert batch.legal_mask()[0].tolist() == [True, True, True, False, True, True, True]
    with pytest.raises(ValueError, match="column full"):
        batch.play(np.array([0]), np.array([3]))


def _net_preferring(column: int) -> ConnectFourNet:
    """A network whose actor puts a huge logit on ``column``, so only the mask can stop it."""
    net = ConnectFourNet((16,), features="raw")
    with torch.no_grad():
        final = net.actor.net[-1]
        final.weight.zero_()
        final.bias.zero_()
        final.bias[column] = 50.0
    return net


def test_masked_policy_never_plays_full_column():
    net = _net_preferring(3)
    batch = ConnectFourBatch(256)
    for _ in range(6):
        batch.play(np.arange(256), np.full(256, 3))
    legal = batch.legal_mask()
    generator = torch.Generator().manual_seed(0)
    sampled = net.act(batch.planes(), legal, generator)
    greedy = net.act(batch.planes(), legal, generator, greedy=True)
    assert not np.any(sampled == 3)
    assert not np.any(greedy == 3)
    log_probs, entropy = masked_log_probs_and_entropy(net(torch.as_tensor(batch.planes()))[0], torch.as_tensor(legal))
    assert torch.all(log_probs[:, 3] == float("-inf"))
    assert torch.all(torch.isfinite(entropy))


def test_masked_entropy_gradient_is_finite():
    logits = torch.zeros(2, 7, requires_grad=True)
    legal = torch.tensor([[True] * 7, [True, False, False, False, False, False, True]])
    _, entropy = masked_log_probs_and_entropy(logits, legal)
    assert entropy[0].item() == pytest.approx(np.log(7))
    assert entropy[1].item() == pytest.approx(np.log(2))
    entropy.sum().backward()
    assert torch.all(torch.isfinite(logits.grad))


def test_agent_never_plays_full_column_on_pettingzoo(tmp_path):
    agent = ConnectFourAgent(_net_preferring(0))
    env = make_pettingzoo_env()
    for seed in range(5):
        opponent = RandomPlayer(seed)
        reward, plies = play_pettingzoo_game(env, agent.choose_move, opponent.choose_move, seed=seed)
        # An illegal move would end the game early with -1 for the agent through TerminateIllegalWrapper.
        assert plies >= 7
        assert reward in (-1.0, 0.0, 1.0)
    env.close()


def test_selfplay_rollout_only_plays_legal_moves(one_torch_thread):
    settings = SelfPlaySettings(num_envs=16, rollout_steps=30, heuristic_fraction=0.3, random_fraction=0.2)
    trainer = SelfPlayTrainer(settings, total_steps=1000, seed=0)
    batch = trainer.collect()
    chosen_legal = batch["legal"][np.arange(batch["actions"].size), batch["actions"]]
    assert chosen_legal.all()
    assert np.isfinite(batch["log_probs"]).all()
    assert trainer.finished  # 30 moves each in 16 games finish several games


def test_tactical_planes_mark_threats():
    batch = ConnectFourBatch(1)
    for column in [0, 6, 1, 6, 2]:
        batch.play(np.array([0]), np.array([column]))
    planes = tactical_planes(torch.as_tensor(batch.planes()))[0]
    # player_1 is to move; player_0 threatens the bottom cell of column 3.
    assert planes[4].nonzero().tolist() == [[5, 3]]
    assert planes[2, 5].tolist() == [0, 0, 0, 1, 1, 1, 0]
    assert planes[3].sum().item() == 0


@pytest.mark.parametrize(
    ("to_move", "win_now", "block_now", "hands_win", "spoils_own"),
    [
        # player_0 to move: its threat is at (4, 3) above the playable (5, 3), where player_1 threatens.
        (0, [], [[5, 3]], [], [[5, 3]]),
        # player_1 to move: it wins at (5, 3), and a token there would hand player_0 the cell (4, 3).
        (1, [[5, 3]], [], [[5, 3]], []),
    ],
)
def test_safety_planes_mark_one_move_consequences(to_move, win_now, block_now, hands_win, spoils_own):
    batch = ConnectFourBatch(1)
    batch.board[0, 5, :3] = 2  # player_1 in the bottom row, columns 0-2
    batch.board[0, 4, :3] = 1  # player_0 on top of them
    batch.to_move[0] = to_move
    planes = safety_planes(torch.as_tensor(batch.planes()))[0]
    assert planes.shape == (9, 6, 7)
    assert torch.equal(planes[:5], tactical_planes(torch.as_tensor(batch.planes()))[0])
    assert planes[5].nonzero().tolist() == win_now
    assert planes[6].nonzero().tolist() == block_now
    assert planes[7].nonzero().tolist() == hands_win
    assert planes[8].nonzero().tolist() == spoils_own


def test_mirror_augment_appends_mirrored_positions(one_torch_thread):
    settings = SelfPlaySettings(num_envs=4, rollout_steps=5, hidden_sizes=[16], features="tactical_safety", mirror_augment=True)
    trainer = SelfPlayTrainer(settings, 10_000, seed=2)
    batch = {key: torch.as_tensor(value) for key, value in trainer.collect().items()}
    both = trainer._with_mirror(batch)
    size = batch["actions"].shape[0]
    assert both["actions"].shape[0] == 2 * size
    assert torch.equal(both["planes"][size:], batch["planes"].flip(-1))
    assert torch.equal(both["legal"][size:], batch["legal"].flip(-1))
    assert torch.equal(both["actions"][size:], 6 - batch["actions"])
    assert torch.equal(both["advantages"][size:], batch["advantages"])
    assert torch.equal(both["returns"][size:], batch["returns"])
    # Every mirrored action is legal in the mirrored position, so its log-probability is finite.
    assert both["legal"][size:].gather(1, both["actions"][size:, None]).all()
    assert torch.isfinite(both["log_probs"][size:]).all()
    with torch.no_grad():
        logits, values = trainer.net(both["planes"][size:])
    assert torch.allclose(both["values"][size:], values)


def test_heuristic_takes_win_then_blocks():
    batch = ConnectFourBatch(1)
    for column in [0, 6, 1, 6, 2, 5]:
        batch.play(np.array([0]), np.array([column]))
    # player_0 to move with three in the bottom row: it must win in column 3.
    heuristic = OneStepLookaheadPlayer(seed=0)
    assert heuristic.act_batch(batch.planes(), batch.legal_mask()).tolist() == [3]
    batch.play(np.array([0]), np.array([4]))
    # player_1 to move; player_0 now threatens column 3 and player_1 has no win, so it blocks there.
    planes = batch.planes()
    assert completing_columns(planes[:, 1], planes[:, 0], batch.legal_mask())[0].tolist() == [False, False, False, True, False, False, False]
    assert heuristic.act_batch(planes, batch.legal_mask()).tolist() == [3]


def test_heuristic_beats_random_player():
    result = play_match(OneStepLookaheadPlayer(1), RandomPlayer(2), 200)
    assert np.mean(result.score_first == 1.0) > 0.8


def test_shipped_agent_picks_legal_move():
    agent = ConnectFourAgent.load(SHIPPED)
    env = make_pettingzoo_env()
    env.reset(seed=0)
    for column in [3, 3, 3, 3, 3, 3]:
        env.step(column)
    observation, *_ = env.last()
    move = agent.choose_move(observation["observation"], observation["action_mask"])
    assert isinstance(move, int)
    assert move != 3
    assert observation["action_mask"][move] == 1
    probabilities = agent.action_probabilities(observation["observation"], observation["action_mask"])
    assert probabilities[3] == 0.0
    assert probabilities.sum() == pytest.approx(1.0)


def test_shipped_agent_takes_immediate_win():
    agent = ConnectFourAgent.load(SHIPPED)
    env = make_pettingzoo_env()
    env.reset(seed=0)
    for column in [0, 6, 1, 6, 2, 5]:
        env.step(column)
    observation, *_ = env.last()
    assert agent.choose_move(observation["observation"], observation["action_mask"]) == 3


def test_agent_rejects_wrong_board_shape():
    agent = ConnectFourAgent(ConnectFourNet((16,)))
    with pytest.raises(ValueError, match="6, 7, 2"):
        agent.choose_move(np.zeros((2, 6, 7)), np.ones(7))
    with pytest.raises(ValueError, match="no legal column"):
        agent.choose_move(np.zeros((6, 7, 2)), np.zeros(7))


def test_policy_checkpoint_round_trip(tmp_path):
    net = ConnectFourNet((32, 32), torso="conv", channels=8)
    save_policy(tmp_path / "policy", net, {"global_step": 5})
    loaded, metadata = load_policy(tmp_path / "policy.json")
    assert metadata["global_step"] == 5
    planes = ConnectFourBatch(3).planes()
    assert torch.equal(loaded(torch.as_tensor(planes))[0], net(torch.as_tensor(planes))[0])


def test_checkpoint_of_other_kind_is_rejected(tmp_path):
    save_checkpoint(tmp_path / "other", {"w": torch.zeros(2)}, {"kind": "cooperative_ppo", "env_id": "pistonball_v6"})
    with pytest.raises(CheckpointError, match="cooperative_ppo"):
        ConnectFourAgent.load(tmp_path / "other")
