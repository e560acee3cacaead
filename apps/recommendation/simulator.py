"""User simulator: a Gymnasium env in which a ranking policy serves slates to one simulated user.

The user's click model is a preference model fitted on the training split (logistic matrix
factorisation plus a text-affinity term), scaled by position bias and by fatigue for items that are
repeated or similar to what the user already clicked in the session.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from pydantic import BaseModel, ConfigDict, Field

from shared.checkpoints import load_checkpoint, save_checkpoint

ENV_ID = "ScenarioLab/RecSession-v0"
Z_LIMIT = 10.0


# ---------------------------------------------------------------------------------------------
# Preference model


class PreferenceSettings(BaseModel):
    """Fitting of the click preference model on the training split."""

    model_config = ConfigDict(extra="forbid")

    factors: int = Field(32, ge=1)
    negatives: int = Field(4, ge=1, description="Random items per training interaction.")
    epochs: int = Field(20, ge=1, description="Passes over the training interactions.")
    batch_size: int = Field(4096, ge=1, description="Training interactions per Adam step (each with its negatives).")
    learning_rate: float = Field(0.01, gt=0)
    weight_decay: float = Field(1e-3, ge=0, description="L2 penalty on the user and item factors of each batch.")


def user_profiles(histories: Sequence[np.ndarray], embeddings: np.ndarray) -> np.ndarray:
    """Return each user's unit-length mean embedding of their history (zeros for an empty history)."""
    profiles = np.zeros((len(histories), embeddings.shape[1]), dtype=np.float32)
    for user, history in enumerate(histories):
        if len(history):
            mean = embeddings[history].mean(0)
            profiles[user] = mean / max(float(np.linalg.norm(mean)), 1e-12)
    return profiles


class PreferenceModel:
    """Click logit of user u for item i: ``bias + item_bias[i] + users[u]·items[i] + text_weight·cos(profile_u, e_i)``."""

    def __init__(self, users: np.ndarray, items: np.ndarray, item_bias: np.ndarray, bias: float, text_weight: float, profiles: np.ndarray, embeddings: np.ndarray):
        self.users = users.astype(np.float32)
        self.items = items.astype(np.float32)
        self.item_bias = item_bias.astype(np.float32)
        self.bias = float(bias)
        self.text_weight = float(text_weight)
        self.profiles = profiles.astype(np.float32)
        self.embeddings = embeddings

    def logits(self, user: int, items: np.ndarray) -> np.ndarray:
        text = self.embeddings[items] @ self.profiles[user]
        return self.bias + self.item_bias[items] + self.items[items] @ self.users[user] + self.text_weight * text

    @classmethod
    def fit(cls, user: np.ndarray, item: np.ndarray, num_users: int, num_items: int, histories: Sequence[np.ndarray], embeddings: np.ndarray, settings: PreferenceSettings, seed: int = 0) -> "PreferenceModel":
        """Fit on training interactions (positives) against random items (negatives) with binary cross-entropy.

        Mini-batch Adam over shuffled interactions: a few full-batch steps leave the factors near
        their initialisation, and the model then ranks candidates by popularity and text alone.
        """
        generator = torch.Generator().manual_seed(seed)
        rng = np.random.default_rng(seed)
        profiles = user_profiles(histories, embeddings)
        users = torch.nn.Parameter(0.1 * torch.randn(num_users, settings.factors, generator=generator))
        items = torch.nn.Parameter(0.1 * torch.randn(num_items, settings.factors, generator=generator))
        item_bias = torch.nn.Parameter(torch.zeros(num_items))
        bias = torch.nn.Parameter(torch.zeros(()))
        text_weight = torch.nn.Parameter(torch.ones(()))
        optimizer = torch.optim.Adam([users, items, item_bias, bias, text_weight], lr=settings.learning_rate)
        # Cosine of every user profile to every item, computed once (users x items floats).
        # Limitation: this matrix grows with users x items; a catalogue of millions needs batching.
        affinity = torch.from_numpy(profiles) @ torch.from_numpy(np.asarray(embeddings, dtype=np.float32)).T
        positive_u = torch.from_numpy(user)
        positive_i = torch.from_numpy(item)
        for _ in range(settings.epochs):
            permutation = torch.from_numpy(rng.permutation(len(positive_u)))
            for start in range(0, len(permutation), settings.batch_size):
                batch = permutation[start : start + settings.batch_size]
                batch_u = positive_u[batch]
                negative_u = batch_u.repeat(settings.negatives)
                # Limitation: negatives are uniform over the catalogue and may hit an item the user consumed.
                negative_i = torch.from_numpy(rng.integers(0, num_items, size=len(negative_u)))
                all_u = torch.cat([batch_u, negative_u])
                all_i = torch.cat([positive_i[batch], negative_i])
                labels = torch.cat([torch.ones(len(batch_u)), torch.zeros(len(negative_u))])
                text = affinity[all_u, all_i]
                logits = bias + item_bias[all_i] + (users[all_u] * items[all_i]).sum(1) + text_weight * text
                loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
                loss = loss + settings.weight_decay * (users[all_u].pow(2).sum(1).mean() + items[all_i].pow(2).sum(1).mean())
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        return cls(users.detach().numpy(), items.detach().numpy(), item_bias.detach().numpy(), bias.item(), text_weight.item(), profiles, embeddings)

    def auc(self, users: np.ndarray, positives: np.ndarray, histories: Sequence[np.ndarray], num_items: int, seed: int = 0, negatives: int = 100) -> float:
        """Return the AUC of held-out items against random unseen items (ties count one half)."""
        rng = np.random.default_rng(seed)
        total = 0.0
        for user, positive in zip(users, positives):
            seen = set(int(item) for item in histories[user]) | {int(positive)}
            sampled = rng.integers(0, num_items, size=negatives * 2)
            sampled = np.array([item for item in sampled if int(item) not in seen][:negatives])
            scores = self.logits(int(user), np.append(sampled, positive))
            positive_score = scores[-1]
            total += (np.sum(scores[:-1] < positive_score) + 0.5 * np.sum(scores[:-1] == positive_score)) / len(sampled)
        return float(total / max(len(users), 1))

    def save(self, stem: Path, metadata: dict[str, Any]) -> None:
        tensors = {
            "users": torch.from_numpy(self.users),
            "items": torch.from_numpy(self.items),
            "item_bias": torch.from_numpy(self.item_bias),
        }
        save_checkpoint(stem, tensors, {**metadata, "bias": self.bias, "text_weight": self.text_weight})

    @classmethod
    def load(cls, stem: Path, histories: Sequence[np.ndarray], embeddings: np.ndarray) -> tuple["PreferenceModel", dict[str, Any]]:
        tensors, metadata = load_checkpoint(stem)
        profiles = user_profiles(histories, embeddings)
        model = cls(tensors["users"].numpy(), tensors["items"].numpy(), tensors["item_bias"].numpy(), metadata["bias"], metadata["text_weight"], profiles, embeddings)
        return model, metadata


# ---------------------------------------------------------------------------------------------
# The env


class SimulatorSettings(BaseModel):
    """Session dynamics of the simulated user."""

    model_config = ConfigDict(extra="forbid")

    slate_size: int = Field(10, ge=1)
    history_length: int = Field(10, ge=1)
    max_session_steps: int = Field(20, ge=1)
    preference_scale: float = Field(3.0, gt=0, description="Multiplies the preference logit before the sigmoid (inverse temperature): higher makes relevance matter more.")
    click_offset: float = Field(-7.0, description="Added to the scaled preference logit before the sigmoid; sets the overall click rate.")
    position_bias: float = Field(1.0, ge=0, description="Examination probability at 0-based slot k is 1/log2(k+2)**position_bias.")
    repeat_decay: float = Field(0.8, ge=0, le=1, description="Click probability factor per earlier showing of the same (unclicked) item in the session.")
    similarity_threshold: float = Field(0.6, ge=-1, lt=1, description="Cosine similarity to a clicked item above which fatigue sets in.")
    similarity_penalty: float = Field(0.7, ge=0, le=1, description="Largest click-probability cut for an item nearly identical to a clicked one.")
    leave_probability: float = Field(0.05, ge=0, le=1, description="Chance to leave after a step with a click.")
    leave_if_unsatisfied: float = Field(0.2, ge=0, le=1, description="Chance to leave after the first step without clicks.")
    unsatisfied_leave_step: float = Field(0.1, ge=0, le=1, description="Added to the leave chance for each further consecutive step without clicks.")
    diversity_weight: float = Field(0.0, ge=0, description="Reward per unit of the slate's intra-list distance.")


@dataclass
class SimulatorWorld:
    """Everything a simulated session reads: embeddings, candidates, histories and the preference model."""

    embeddings: np.ndarray  # (items, d) unit vectors
    candidates: np.ndarray  # (users, N) item ids, best base score first
    base_scores: np.ndarray  # (users, N)
    histories: Sequence[np.ndarray]  # training histories in time order
    preference: PreferenceModel
    users: np.ndarray  # the pool sessions draw users from
    item_titles: Sequence[str] | None = None


def standardise(scores: np.ndarray) -> np.ndarray:
    """Return per-row z-scores (a constant row becomes zeros)."""
    mean = scores.mean(-1, keepdims=True)
    std = scores.std(-1, keepdims=True)
    return ((scores - mean) / np.maximum(std, 1e-6)).astype(np.float32)


def scores_from_order(order: np.ndarray, size: int) -> np.ndarray:
    """Turn a ranking (candidate indices, best first) into action scores in [-1, 1] that sort the same way."""
    scores = np.empty(size, dtype=np.float32)
    scores[order] = np.linspace(1.0, -1.0, size, dtype=np.float32)
    return scores


class RecommendationSessionEnv(gym.Env):
    """One user's session: each step the policy ranks the user's N candidates and the top K are shown.

    ## Observation space

    A ``Dict``:

    - ``history`` Box(-1, 1, (H, d)): text embeddings of the user's H most recent items (training
      history, then this session's clicks), oldest first and zero-padded at the front.
    - ``history_mask`` Box(0, 1, (H,)): 1 where ``history`` contains an item.
    - ``candidates`` Box(-1, 1, (N, d)): text embeddings of the N candidates, in base-model order.
    - ``base_scores`` Box(-10, 10, (N,)): the base model's scores of the candidates, standardised
      per user (z-scores, clipped to +-10).
    - ``shown_count`` Box(0, max_session_steps, (N,)): how often each candidate was shown so far.
    - ``available`` Box(0, 1, (N,)): 1 for a candidate that may still be shown, 0 for one the user
      already clicked in this session.

    ## Action space

    Box(-1, 1, (N,)): one score per candidate. The K highest-scoring available candidates are
    shown, best first (equal scores keep candidate order). Items clicked earlier in the session are
    filtered out for every policy, as production recommenders filter consumed items, so no ranking
    can earn a click by showing the same item again.

    ## Rewards

    The number of clicks on the slate, plus ``diversity_weight`` times the slate's intra-list
    distance (mean pairwise cosine distance of the shown items' text embeddings). The click
    probability of the item in 0-based slot k is
    ``sigmoid(preference_scale * preference logit + click_offset) / log2(k+2)**position_bias``, times
    ``repeat_decay**times_shown`` (an item the user examined and skipped is weaker evidence of
    interest each time it comes back), times a similarity cut that grows linearly from 0 at
    ``similarity_threshold`` to ``similarity_penalty`` at cosine 1 to the closest clicked item
    (near-duplicates of what the user just watched).

    The defaults keep relevance dominant. With ``preference_scale`` 3 and ``click_offset`` -7, the
    first slate of the base ranking on ml-latest-small gets 2.8 times the CTR of a random order of
    the same 100 candidates. The ratio of held-out hits of the two rankings is 2.2 to 2.6.
    ``repeat_decay`` 0.8 still leaves an item shown five times a third of its first-showing
    probability.

    ## Episode end

    Terminated when the user leaves: after a step with a click with probability
    ``leave_probability``; after the m-th consecutive step without a click with probability
    ``leave_if_unsatisfied + (m - 1) * unsatisfied_leave_step`` (capped at 1); or when fewer than K
    unclicked candidates are left, so every slate has exactly K items. Truncated after ``max_session_steps``.

    ## Info

    ``clicks`` (per slot), ``slate`` (item ids), ``user``, ``shown`` (K), and on the last step
    ``session_clicks`` and ``session_shown``.
    """

    metadata = {"render_modes": ["ansi"]}

    def __init__(self, world: SimulatorWorld | None = None, settings: SimulatorSettings | dict[str, Any] | None = None, render_mode: str | None = None):
        if world is None:
            from apps.recommendation.pipeline import shipped_world

            world = shipped_world()
        self.world = world
        self.settings = settings if isinstance(settings, SimulatorSettings) else SimulatorSettings(**(settings or {}))
        self.render_mode = render_mode
        num_candidates = world.candidates.shape[1]
        dim = world.embeddings.shape[1]
        history = self.settings.history_length
        if self.settings.slate_size > num_candidates:
            raise ValueError(f"slate_size {self.settings.slate_size} exceeds the {num_candidates} candidates")
        self.observation_space = spaces.Dict(
            {
                "history": spaces.Box(-1.0, 1.0, (history, dim), np.float32),
                "history_mask": spaces.Box(0.0, 1.0, (history,), np.float32),
                "candidates": spaces.Box(-1.0, 1.0, (num_candidates, dim), np.float32),
                "base_scores": spaces.Box(-Z_LIMIT, Z_LIMIT, (num_candidates,), np.float32),
                "shown_count": spaces.Box(0.0, float(self.settings.max_session_steps), (num_candidates,), np.float32),
                "available": spaces.Box(0.0, 1.0, (num_candidates,), np.float32),
            }
        )
        self.action_space = spaces.Box(-1.0, 1.0, (num_candidates,), np.float32)
        self._user = 0
        self._steps = 0

    # The state is a few arrays; the observation is rebuilt from them each step.
    def _observation(self) -> dict[str, np.ndarray]:
        world = self.world
        length = self.settings.history_length
        recent = self._history[-length:]
        history = np.zeros((length, world.embeddings.shape[1]), dtype=np.float32)
        mask = np.zeros(length, dtype=np.float32)
        if recent:
            history[length - len(recent) :] = world.embeddings[np.asarray(recent)]
            mask[length - len(recent) :] = 1.0
        return {
            "history": np.clip(history, -1.0, 1.0),
            "history_mask": mask,
            "candidates": np.clip(world.embeddings[self._candidates], -1.0, 1.0).astype(np.float32),
            "base_scores": self._base_scores.copy(),
            "shown_count": np.minimum(self._shown, self.settings.max_session_steps).astype(np.float32),
            "available": (~self._clicked).astype(np.float32),
        }

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        world = self.world
        if options and "user" in options:
            self._user = int(options["user"])
        else:
            self._user = int(world.users[int(self.np_random.integers(len(world.users)))])
        self._candidates = world.candidates[self._user]
        self._base_scores = np.clip(standardise(world.base_scores[self._user].astype(np.float32)), -Z_LIMIT, Z_LIMIT)
        self._logits = self.settings.preference_scale * world.preference.logits(self._user, self._candidates) + self.settings.click_offset
        self._history: list[int] = [int(item) for item in world.histories[self._user][-self.settings.history_length :]]
        self._shown = np.zeros(len(self._candidates), dtype=np.float32)
        self._clicked = np.zeros(len(self._candidates), dtype=bool)
        self._clicked_vectors: list[np.ndarray] = []
        self._steps = 0
        self._misses = 0
        self._session_clicks = 0
        self._session_shown = 0
        return self._observation(), {"user": self._user}

    def click_probabilities(self, slate: np.ndarray) -> np.ndarray:
        """Return the click probability of each slot of ``slate`` (candidate indices) in the current state."""
        settings = self.settings
        slots = np.arange(len(slate))
        examine = 1.0 / np.log2(slots + 2.0) ** settings.position_bias
        prefer = 1.0 / (1.0 + np.exp(-self._logits[slate]))
        fatigue = settings.repeat_decay ** self._shown[slate]
        if self._clicked_vectors:
            vectors = self.world.embeddings[self._candidates[slate]]
            closest = (vectors @ np.stack(self._clicked_vectors).T).max(1)
            excess = np.clip((closest - settings.similarity_threshold) / (1.0 - settings.similarity_threshold), 0.0, 1.0)
            fatigue = fatigue * (1.0 - settings.similarity_penalty * excess)
        return (examine * prefer * fatigue).astype(np.float64)

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        settings = self.settings
        scores = np.asarray(action, dtype=np.float64).reshape(-1)
        # Stable descending sort over the available candidates: equal scores keep candidate
        # (base-model) order, and clicked items never come back.
        order = np.argsort(-scores, kind="stable")
        slate = order[~self._clicked[order]][: settings.slate_size]
        probabilities = self.click_probabilities(slate)
        clicks = self.np_random.random(len(slate)) < probabilities
        reward = float(clicks.sum())
        if settings.diversity_weight > 0:
            from apps.recommendation.metrics import intra_list_distance

            reward += settings.diversity_weight * intra_list_distance(self.world.embeddings[self._candidates[slate]])
        self._shown[slate] += 1.0
        for index in slate[clicks]:
            self._clicked[index] = True
            item = int(self._candidates[index])
            self._history.append(item)
            self._clicked_vectors.append(self.world.embeddings[item])
        self._steps += 1
        self._session_clicks += int(clicks.sum())
        self._session_shown += len(slate)
        self._misses = 0 if clicks.any() else self._misses + 1
        if self._misses == 0:
            leave = settings.leave_probability
        else:
            leave = min(1.0, settings.leave_if_unsatisfied + (self._misses - 1) * settings.unsatisfied_leave_step)
        terminated = bool(self.np_random.random() < leave) or int((~self._clicked).sum()) < settings.slate_size
        truncated = (not terminated) and self._steps >= settings.max_session_steps
        info: dict[str, Any] = {"clicks": clicks.astype(np.int64), "slate": self._candidates[slate].copy(), "user": self._user, "shown": len(slate)}
        if terminated or truncated:
            info["session_clicks"] = self._session_clicks
            info["session_shown"] = self._session_shown
        return self._observation(), reward, terminated, truncated, info

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        titles = self.world.item_titles
        recent = self._history[-5:]
        names = [titles[item] if titles is not None else str(item) for item in recent]
        return f"user {self._user}, step {self._steps}, clicks {self._session_clicks}; recent: {', '.join(names)}"


def register_env() -> None:
    """Register :data:`ENV_ID` (idempotent); ``gym.make(ENV_ID)`` builds it on the shipped artefacts."""
    if ENV_ID not in gym.registry:
        gym.register(ENV_ID, entry_point="apps.recommendation.simulator:RecommendationSessionEnv")


register_env()
