"""Elo updates against hand-computed values, and the ladder fitted from game records."""

from __future__ import annotations

import pytest

from apps.game_ai.elo import EloLadder, GameRecord, elo_update, expected_score


def test_expected_score_equal_ratings():
    assert expected_score(1000.0, 1000.0) == pytest.approx(0.5)


def test_expected_score_200_point_gap():
    # 1 / (1 + 10 ** (-200 / 400)) = 1 / (1 + 0.3162277660) = 0.7597469266
    assert expected_score(1200.0, 1000.0) == pytest.approx(0.7597469266, abs=1e-9)
    assert expected_score(1000.0, 1200.0) == pytest.approx(0.2402530734, abs=1e-9)


def test_update_favourite_wins():
    # K = 32: delta = 32 * (1 - 0.7597469266) = 7.6880983
    new_a, new_b = elo_update(1200.0, 1000.0, 1.0, k_factor=32.0)
    assert new_a == pytest.approx(1207.6880983, abs=1e-6)
    assert new_b == pytest.approx(992.3119017, abs=1e-6)


def test_update_underdog_wins():
    # K = 32: delta = 32 * (1 - 0.2402530734) = 24.3119017
    new_a, new_b = elo_update(1000.0, 1200.0, 1.0, k_factor=32.0)
    assert new_a == pytest.approx(1024.3119017, abs=1e-6)
    assert new_b == pytest.approx(1175.6880983, abs=1e-6)


def test_update_draw_with_k16():
    # K = 16: delta = 16 * (0.5 - 0.2402530734) = 4.1559508
    new_a, new_b = elo_update(1000.0, 1200.0, 0.5, k_factor=16.0)
    assert new_a == pytest.approx(1004.1559508, abs=1e-6)
    assert new_b == pytest.approx(1195.8440492, abs=1e-6)


def test_update_rejects_score_outside_unit_interval():
    with pytest.raises(ValueError):
        elo_update(1000.0, 1000.0, 1.5)


def test_ladder_two_games_in_order():
    ladder = EloLadder(k_factor=32.0, initial=1000.0)
    ladder.record(GameRecord("a", "b", 1.0))  # equal ratings: a gains 32 * 0.5 = 16
    assert ladder.ratings == {"a": pytest.approx(1016.0), "b": pytest.approx(984.0)}
    # Now E_a = 1 / (1 + 10 ** (-32 / 400)) = 0.5459219; a loses 32 * 0.5459219 = 17.4695015
    ladder.record(GameRecord("a", "b", 0.0))
    assert ladder.ratings["a"] == pytest.approx(998.5304985, abs=1e-6)
    assert ladder.ratings["b"] == pytest.approx(1001.4695015, abs=1e-6)
    assert ladder.games == {"a": 2, "b": 2}


def test_ladder_keeps_rating_sum_and_anchor_shifts():
    ladder = EloLadder(k_factor=16.0)
    records = [GameRecord("strong", "weak", 1.0)] * 30 + [GameRecord("weak", "strong", 0.0)] * 30 + [GameRecord("strong", "mid", 0.5)] * 10
    ladder.fit(records, passes=2, seed=3)
    assert sum(ladder.ratings.values()) == pytest.approx(3000.0)
    gap = ladder.ratings["strong"] - ladder.ratings["weak"]
    ladder.anchor("weak", 1000.0)
    assert ladder.ratings["weak"] == pytest.approx(1000.0)
    assert ladder.ratings["strong"] - ladder.ratings["weak"] == pytest.approx(gap)
    assert [row[0] for row in ladder.table()][0] == "strong"
