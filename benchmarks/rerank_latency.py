"""Latency of re-ranking one request's 100 candidates with the RL policy on CPU, embeddings cached.

Target: p99 <= 5 ms per request. A request is one user's observation (10 history embeddings, 100
candidate embeddings, base scores, times shown); the timed work is the policy's forward pass and the
sort of its scores. Sorting by base score alone is timed beside it as the floor. PyTorch runs with one
intra-op thread, as a serving process that handles requests in parallel would.
Run: `.venv/bin/python benchmarks/rerank_latency.py [--requests N]`.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def percentile_ms(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples) * 1000.0, q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="timed requests (after 200 warm-up requests)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from apps.recommendation.pipeline import shipped_state
    from apps.recommendation.reranker import Reranker, RerankPolicy

    state = shipped_state()
    name = state.settings.reranker.algorithm
    policy = state.policies.get(name) or RerankPolicy(state.embeddings.shape[1], state.settings.reranker.hidden_size).eval()
    reranker = Reranker(policy)
    env = state.make_env()
    rng = np.random.default_rng(0)
    requests = []
    for _ in range(50):
        obs, _ = env.reset(seed=int(rng.integers(2**31)))
        requests.append(obs)

    def rerank(obs: dict[str, np.ndarray]) -> np.ndarray:
        return np.argsort(-reranker.scores(obs), kind="stable")

    def base_sort(obs: dict[str, np.ndarray]) -> np.ndarray:
        return np.argsort(-obs["base_scores"], kind="stable")

    timings: dict[str, list[float]] = {"rl_rerank": [], "base_sort": []}
    for index in range(200 + args.requests):
        obs = requests[index % len(requests)]
        for label, function in (("rl_rerank", rerank), ("base_sort", base_sort)):
            start = time.perf_counter()
            function(obs)
            elapsed = time.perf_counter() - start
            if index >= 200:
                timings[label].append(elapsed)

    print(f"policy: {name} ({'shipped weights' if name in state.policies else 'untrained weights, same compute'}), {state.base.items.shape[1]} candidates, {args.requests} requests")
    print(f"{'ranker':<10} {'p50 ms':>8} {'p99 ms':>8}")
    for label, samples in timings.items():
        print(f"{label:<10} {percentile_ms(samples, 50):8.3f} {percentile_ms(samples, 99):8.3f}")
    p99 = percentile_ms(timings["rl_rerank"], 99)
    verdict = "met" if p99 <= 5.0 else "not met"
    print(f"rerank_latency: p99={p99:.3f} ms, p50={percentile_ms(timings['rl_rerank'], 50):.3f} ms (target p99 <= 5 ms: {verdict}; base-score sort p99 {percentile_ms(timings['base_sort'], 99):.3f} ms)")


if __name__ == "__main__":
    main()
