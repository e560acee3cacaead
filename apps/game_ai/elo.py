"""Elo ratings for a pool of players from head-to-head game results.

The expected score of A against B is ``E_A = 1 / (1 + 10 ** ((R_B - R_A) / 400))``. One game moves
A's rating by ``K * (S_A - E_A)``, where S_A is 1 for a win, 0.5 for a draw and 0 for a loss. B moves
by the same amount in the other direction, so the rating sum is constant.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np


def expected_score(rating_a: float, rating_b: float) -> float:
    """Return A's expected score against B under the logistic Elo model with a 400-point scale."""
    return 1.0 / (1.0 + 10.0 ** ((rating_b - rating_a) / 400.0))


def elo_update(rating_a: float, rating_b: float, score_a: float, k_factor: float = 32.0) -> tuple[float, float]:
    """Return both ratings after one game in which A scored ``score_a`` (1 win, 0.5 draw, 0 loss)."""
    if not 0.0 <= score_a <= 1.0:
        raise ValueError(f"score_a must lie in [0, 1], got {score_a}")
    delta = k_factor * (score_a - expected_score(rating_a, rating_b))
    return rating_a + delta, rating_b - delta


@dataclass
class GameRecord:
    """One finished game: who played first, who second, and the first player's score."""

    first: str
    second: str
    score_first: float


@dataclass
class EloLadder:
    """Ratings of named players, updated game by game in the order the games are given."""

    k_factor: float = 16.0
    initial: float = 1000.0
    ratings: dict[str, float] = field(default_factory=dict)
    games: dict[str, int] = field(default_factory=dict)

    def add_player(self, name: str) -> None:
        self.ratings.setdefault(name, self.initial)
        self.games.setdefault(name, 0)

    def record(self, game: GameRecord) -> None:
        """Apply one game's Elo update to both players (added at the initial rating if new)."""
        self.add_player(game.first)
        self.add_player(game.second)
        new_first, new_second = elo_update(self.ratings[game.first], self.ratings[game.second], game.score_first, self.k_factor)
        self.ratings[game.first] = new_first
        self.ratings[game.second] = new_second
        self.games[game.first] += 1
        self.games[game.second] += 1

    def fit(self, records: Iterable[GameRecord], passes: int = 1, seed: int = 0) -> None:
        """Replay ``records`` ``passes`` times in shuffled order, so the result does not hinge on game order."""
        records = list(records)
        rng = np.random.default_rng(seed)
        for _ in range(passes):
            for index in rng.permutation(len(records)):
                self.record(records[int(index)])

    def anchor(self, name: str, rating: float) -> None:
        """Shift every rating by the same amount so that ``name`` sits at ``rating``; differences are kept."""
        if name not in self.ratings:
            raise KeyError(f"no player {name!r} in the ladder")
        offset = rating - self.ratings[name]
        for key in self.ratings:
            self.ratings[key] += offset

    def table(self) -> list[tuple[str, float, int]]:
        """Return ``(player, rating, games)`` rows sorted from the highest rating down."""
        return sorted(((name, rating, self.games[name]) for name, rating in self.ratings.items()), key=lambda row: -row[1])
