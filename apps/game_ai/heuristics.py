"""Scripted connect-four opponents: a uniform random legal player and a one-step lookahead.

Both take batches of ``(N, 2, 6, 7)`` planes from the view of the player to move (own tokens,
then the opponent's) with an ``(N, 7)`` legal-column mask. The trained policy takes the same
input, so the self-play loop, the Elo ladder and the evaluation can swap them freely.
"""

from __future__ import annotations

import numpy as np

from apps.game_ai.connect_four import COLUMNS, four_in_a_row, pettingzoo_planes


def completing_columns(own: np.ndarray, opponent: np.ndarray, legal: np.ndarray) -> np.ndarray:
    """Return the ``(N, 7)`` mask of legal columns where a token of ``own`` makes four in a row."""
    occupied = (own > 0) | (opponent > 0)
    own_bool = own > 0
    result = np.zeros(legal.shape, dtype=bool)
    for column in range(COLUMNS):
        games = np.flatnonzero(legal[:, column])
        if games.size == 0:
            continue
        landing_row = (~occupied[games, :, column]).sum(axis=1) - 1
        trial = own_bool[games].copy()
        trial[np.arange(games.size), landing_row, column] = True
        result[games, column] = four_in_a_row(trial)
    return result


def _sample_from_mask(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pick one True column uniformly per row of ``mask`` (every row must have one)."""
    scores = rng.random(mask.shape) + mask.astype(np.float64) * 2.0
    return scores.argmax(axis=1)


class RandomPlayer:
    """Plays a uniformly random legal column."""

    def __init__(self, seed: int = 0, name: str = "random"):
        self.name = name
        self.rng = np.random.default_rng(seed)

    def act_batch(self, planes: np.ndarray, legal: np.ndarray) -> np.ndarray:
        return _sample_from_mask(np.asarray(legal, dtype=bool), self.rng)

    def choose_move(self, board_planes: np.ndarray, legal_mask: np.ndarray) -> int:
        """Pick a column for one PettingZoo ``(6, 7, 2)`` observation and its ``action_mask``."""
        planes = pettingzoo_planes(board_planes)[None]
        return int(self.act_batch(planes, np.asarray(legal_mask, dtype=bool)[None])[0])


class OneStepLookaheadPlayer:
    """Takes a winning move if there is one, else blocks the opponent's immediate win, else plays randomly.

    Ties (two winning columns, or two threats to block) are broken uniformly at random.
    """

    def __init__(self, seed: int = 0, name: str = "heuristic"):
        self.name = name
        self.rng = np.random.default_rng(seed)

    def act_batch(self, planes: np.ndarray, legal: np.ndarray) -> np.ndarray:
        legal = np.asarray(legal, dtype=bool)
        own, opponent = planes[:, 0], planes[:, 1]
        wins = completing_columns(own, opponent, legal)
        blocks = completing_columns(opponent, own, legal)
        choice = np.where(wins.any(axis=1, keepdims=True), wins, np.where(blocks.any(axis=1, keepdims=True), blocks, legal))
        return _sample_from_mask(choice, self.rng)

    def choose_move(self, board_planes: np.ndarray, legal_mask: np.ndarray) -> int:
        """Pick a column for one PettingZoo ``(6, 7, 2)`` observation and its ``action_mask``."""
        planes = pettingzoo_planes(board_planes)[None]
        return int(self.act_batch(planes, np.asarray(legal_mask, dtype=bool)[None])[0])

