"""A small synthetic recommendation world for simulator and re-ranker tests (no dataset, no encoder)."""

import numpy as np
import pytest

from apps.recommendation.simulator import PreferenceModel, PreferenceSettings, SimulatorWorld


def make_world(users: int = 12, items: int = 60, candidates: int = 20, dim: int = 8, seed: int = 0) -> SimulatorWorld:
    rng = np.random.default_rng(seed)
    embeddings = rng.normal(size=(items, dim)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    histories = [rng.choice(items, size=8, replace=False) for _ in range(users)]
    user = np.concatenate([np.full(8, u) for u in range(users)])
    item = np.concatenate(histories)
    preference = PreferenceModel.fit(user, item, users, items, histories, embeddings, PreferenceSettings(epochs=5), seed=seed)
    cands = np.stack([rng.choice(np.setdiff1d(np.arange(items), h), size=candidates, replace=False) for h in histories])
    scores = np.sort(rng.normal(size=(users, candidates)).astype(np.float32), axis=1)[:, ::-1].copy()
    return SimulatorWorld(embeddings, cands, scores, histories, preference, np.arange(users), [f"item {i}" for i in range(items)])


@pytest.fixture(scope="module")
def world() -> SimulatorWorld:
    return make_world()
