"""Offline ranking metrics with one held-out item per user: NDCG, recall, MRR, hit, coverage, ILD, novelty.

Ties never inflate accuracy: the held-out item's rank counts every other candidate with an equal
score as ranked above it (pessimistic tie-breaking). Top-k lists for the beyond-accuracy metrics
(coverage, intra-list diversity, novelty) break ties at random with a seeded generator.
"""

from __future__ import annotations

import numpy as np


def pessimistic_rank(scores: np.ndarray, target_index: int) -> int:
    """Return the 1-based rank of ``scores[target_index]`` with every tie counted above it."""
    value = scores[target_index]
    above = int(np.sum(scores > value))
    tied_others = int(np.sum(scores == value)) - 1
    return above + tied_others + 1


def top_k(scores: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Return the indices of the k highest scores, best first, breaking ties at random."""
    noise = rng.random(len(scores))
    order = np.lexsort((noise, -scores))
    return order[:k]


def accuracy_at_k(rank: float, k: int) -> dict[str, float]:
    """Return ``ndcg@k``, ``recall@k``, ``mrr@k`` and ``hit@k`` of one held-out item at ``rank`` (inf if absent)."""
    hit = rank <= k
    return {
        f"ndcg@{k}": float(1.0 / np.log2(rank + 1.0)) if hit else 0.0,
        f"recall@{k}": 1.0 if hit else 0.0,
        f"mrr@{k}": float(1.0 / rank) if hit else 0.0,
        f"hit@{k}": 1.0 if hit else 0.0,
    }


def held_out_ndcg(scores: np.ndarray, target_index: int, k: int) -> float:
    """Return NDCG@k of the held-out item at ``scores[target_index]``, or 0 when target_index is -1 (not scored)."""
    rank = float(pessimistic_rank(scores, target_index)) if target_index >= 0 else float("inf")
    return accuracy_at_k(rank, k)[f"ndcg@{k}"]


def intra_list_distance(vectors: np.ndarray) -> float:
    """Return the mean pairwise cosine distance (1 - cos) of the rows of ``vectors``."""
    if len(vectors) < 2:
        return 0.0
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    similarity = unit @ unit.T
    count = len(vectors)
    off_diagonal = (similarity.sum() - np.trace(similarity)) / (count * (count - 1))
    return float(1.0 - off_diagonal)


def ranking_metrics(
    scores: np.ndarray,
    candidates: np.ndarray,
    targets: np.ndarray,
    embeddings: np.ndarray,
    popularity: np.ndarray,
    k: int = 10,
    seed: int = 0,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Score one ranker over users that each have one held-out item.

    ``scores`` and ``candidates`` are (users, N): the ranker's score of each candidate item id.
    ``targets`` contains each user's held-out item id; a user whose target is not among the candidates
    gets rank infinity (no hit). Returns the means and the per-user values (for confidence intervals).
    ``coverage@k`` is the share of the catalogue that appears in any user's top k, so it has no
    per-user value.
    """
    rng = np.random.default_rng(seed)
    per_user: dict[str, list[float]] = {name: [] for name in (f"ndcg@{k}", f"recall@{k}", f"mrr@{k}", f"hit@{k}", f"ild@{k}", f"novelty@{k}")}
    shown: set[int] = set()
    for row in range(len(targets)):
        where = np.flatnonzero(candidates[row] == targets[row])
        rank = float(pessimistic_rank(scores[row], int(where[0]))) if where.size else float("inf")
        for name, value in accuracy_at_k(rank, k).items():
            per_user[name].append(value)
        chosen = candidates[row, top_k(scores[row], k, rng)]
        shown.update(int(item) for item in chosen)
        per_user[f"ild@{k}"].append(intra_list_distance(embeddings[chosen]))
        per_user[f"novelty@{k}"].append(float(np.mean(-np.log2(popularity[chosen]))))
    arrays = {name: np.asarray(values, dtype=np.float64) for name, values in per_user.items()}
    means = {name: float(values.mean()) if values.size else 0.0 for name, values in arrays.items()}
    means[f"coverage@{k}"] = len(shown) / float(len(popularity))
    return means, arrays
