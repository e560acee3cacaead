"""Functions behind the Streamlit page: users, their history, base vs RL top 10, a simulated session.

Everything runs on the shipped ml-latest-small artefacts, so no call trains a model. The first call
loads the dataset, the embedding cache and the artefacts (a few seconds); later calls reuse them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from apps.recommendation.pipeline import PipelineState, ranker_action, shipped_state
from apps.recommendation.reranker import Reranker
from apps.recommendation.simulator import RecommendationSessionEnv


def _state() -> PipelineState:
    return shipped_state()


def _user_index(state: PipelineState, user: str) -> int:
    matches = np.flatnonzero(state.data.user_tokens == str(user))
    if not matches.size:
        raise KeyError(f"unknown user {user!r}")
    return int(matches[0])


def list_users(limit: int | None = None) -> list[str]:
    """Return user ids (as in the dataset) that have a training history and a test item."""
    state = _state()
    histories = state.data.train_histories()
    users = [str(state.data.user_tokens[u]) for u in state.data.test_users() if len(histories[u])]
    return users[:limit] if limit else users


def _item_row(state: PipelineState, item: int, score: float | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {"item_id": str(state.data.item_tokens[item]), "title": state.data.item_title[item], "text": state.data.item_text[item]}
    if score is not None:
        row["score"] = float(score)
    return row


def user_history(user: str, count: int = 10) -> list[dict[str, Any]]:
    """Return the user's most recent training items with titles, oldest first."""
    state = _state()
    history = state.data.train_histories()[_user_index(state, user)]
    return [_item_row(state, int(item)) for item in history[-count:]]


def base_top(user: str, k: int = 10) -> list[dict[str, Any]]:
    """Return the base model's top k candidates for the user, with its scores."""
    state = _state()
    index = _user_index(state, user)
    items, scores = state.base.items[index], state.base.scores[index]
    return [_item_row(state, int(items[i]), scores[i]) for i in range(k)]


def rl_top(user: str, k: int = 10, algorithm: str | None = None) -> list[dict[str, Any]]:
    """Return the RL re-ranker's top k of the user's candidates at the start of a session."""
    state = _state()
    name = algorithm or state.settings.reranker.algorithm
    if name not in state.policies:
        raise KeyError(f"no shipped re-ranker {name!r}; shipped: {', '.join(state.policies) or 'none'}")
    index = _user_index(state, user)
    env = state.make_env(np.array([index]))
    obs, _ = env.reset(seed=0, options={"user": index})
    logits = Reranker(state.policies[name]).scores(obs)
    order = np.argsort(-logits, kind="stable")[:k]
    return [_item_row(state, int(state.base.items[index][i]), logits[i]) for i in order]


@dataclass
class DemoSession:
    """One simulated session under a chosen ranker, stepped one slate at a time."""

    user: str
    ranker: str = "ppo"
    seed: int = 0
    steps: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False

    def __post_init__(self) -> None:
        state = _state()
        index = _user_index(state, self.user)
        self._env: RecommendationSessionEnv = state.make_env(np.array([index]))
        self._obs, _ = self._env.reset(seed=self.seed, options={"user": index})
        self._act = ranker_action(state, self.ranker, np.random.default_rng(self.seed))

    def step(self) -> dict[str, Any]:
        """Show one slate; return its items with click flags, the reward and whether the user left."""
        if self.done:
            raise RuntimeError("the session has ended; start a new DemoSession")
        state = _state()
        self._obs, reward, terminated, truncated, info = self._env.step(self._act(self._obs))
        self.done = bool(terminated or truncated)
        slate = [{**_item_row(state, int(item)), "clicked": bool(click)} for item, click in zip(info["slate"], info["clicks"])]
        record = {"step": len(self.steps) + 1, "slate": slate, "reward": float(reward), "left": bool(terminated), "ended": self.done}
        self.steps.append(record)
        return record
