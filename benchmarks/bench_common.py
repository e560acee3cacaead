"""Helpers shared by the side-by-side benchmarks: timing rounds, medians and the closing ratio line."""

from __future__ import annotations

import statistics
import time
from typing import Callable


def alternate(rounds: int, runners: dict[str, Callable[[], int]]) -> dict[str, list[float]]:
    """Run each runner once per round, alternating, and return steps per second per runner.

    Alternating within one process keeps machine noise (other processes, thermal state) roughly
    equal for both sides, so the ratio of medians is more stable than either number.
    """
    results: dict[str, list[float]] = {name: [] for name in runners}
    for round_index in range(rounds):
        for name, runner in runners.items():
            start = time.perf_counter()
            steps = runner()
            seconds = time.perf_counter() - start
            results[name].append(steps / seconds)
            print(f"round {round_index + 1}/{rounds} {name:<12} {steps} steps in {seconds:6.2f} s = {steps / seconds:8.1f} steps/s", flush=True)
    return results


def print_table(name: str, results: dict[str, list[float]], ours: str, peer: str, unit: str = "steps/s") -> float:
    """Print medians and the closing line ``NAME: ratio=X.XX (ours A unit, peer B unit)``; return the ratio."""
    ours_median = statistics.median(results[ours])
    peer_median = statistics.median(results[peer])
    print()
    print(f"| side | median {unit} | rounds |")
    print("|---|---|---|")
    for side, values in results.items():
        print(f"| {side} | {statistics.median(values):.1f} | {', '.join(f'{v:.0f}' for v in values)} |")
    ratio = ours_median / peer_median
    print(f"{name}: ratio={ratio:.2f} (ours {ours_median:.1f} {unit}, peer {peer_median:.1f} {unit})")
    return ratio
