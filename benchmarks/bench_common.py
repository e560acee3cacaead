"""Helpers shared by the side-by-side benchmarks: timing rounds, medians and the closing ratio line."""

from __future__ import annotations

import statistics
import time
import argparse
import tempfile
from pathlib import Path
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


def scenariolab_runner(scenario: str, steps: int, overrides: list[str] | None = None, compiled: bool = False) -> Callable[[], int]:
    """Return a runner that trains ``scenario`` for ``steps`` with the shared Trainer (JSONL logging, no TensorBoard)."""
    from shared.logging import MetricLogger
    from shared.registry import get_kind
    from shared.rollout import VectorCollector
    from shared.scenario import load_scenario
    from shared.training import Trainer

    loaded = load_scenario(scenario, ["logging.tensorboard=false", *(overrides or [])])
    kind = get_kind(loaded.scenario.kind)

    def run() -> int:
        envs = kind.make_vector_env(loaded, 0)
        agent = kind.build_agent(loaded, envs, steps, 0)
        if compiled:
            agent.compile()
        collector = VectorCollector(envs, 0)
        with tempfile.TemporaryDirectory() as folder:
            logger = MetricLogger(folder, tensorboard=False)
            Trainer(agent, collector, logger, Path(folder) / "checkpoints", steps, progress=False, save_replay_buffer=False).train()
            logger.close()
        envs.close()
        return collector.global_step

    return run


def flushing_denormals(runner: Callable[[], int]) -> Callable[[], int]:
    """Return ``runner`` wrapped so that it runs with subnormal floats flushed to zero."""
    from shared.training import flush_denormals

    def run() -> int:
        with flush_denormals():
            return runner()

    return run


def compare_with_sb3(name: str, description: str, scenario: str, sb3_runner: Callable[[int], Callable[[], int]]) -> None:
    """Parse ``--steps``/``--rounds``, alternate ScenarioLab's run of ``scenario`` with SB3's, print the table."""
    import torch

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--steps", type=int, default=20_000, help="training steps per round and side")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the medians over rounds are compared")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field of ScenarioLab's scenario, e.g. env.vectorization=sync")
    parser.add_argument("--peer-flush-denormals", action="store_true", help="flush subnormal floats to zero while SB3 trains too, as ScenarioLab's Trainer does")
    args = parser.parse_args()
    torch.set_num_threads(1)
    peer = sb3_runner(args.steps)
    if args.peer_flush_denormals:
        peer = flushing_denormals(peer)
    runners = {"scenariolab": scenariolab_runner(scenario, args.steps, args.set), "sb3": peer}
    print_table(name, alternate(args.rounds, runners), "scenariolab", "sb3")
