"""Does ``compile: true`` (torch.compile) speed up training on CPU? PPO on CartPole, eager against compiled.

No target: the result decides the default, which stays eager (``compile: false``) unless the ratio
is clearly above 1. Compilation time is counted, as a user pays it once per run.
Run: `.venv/bin/python benchmarks/compile_cpu.py [--steps N] [--rounds R]`.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from bench_common import alternate, print_table


def runner(steps: int, compiled: bool):
    from shared.logging import MetricLogger
    from shared.registry import get_kind
    from shared.rollout import VectorCollector
    from shared.scenario import load_scenario
    from shared.training import Trainer

    loaded = load_scenario("scenarios/classic/cartpole_ppo.yaml", ["logging.tensorboard=false", f"compile={str(compiled).lower()}"])
    kind = get_kind("gym")

    def run() -> int:
        envs = kind.make_vector_env(loaded, 0)
        agent = kind.build_agent(loaded, envs, steps, 0)
        if compiled:
            agent.compile()
        collector = VectorCollector(envs, 0)
        with tempfile.TemporaryDirectory() as folder:
            logger = MetricLogger(folder, tensorboard=False)
            Trainer(agent, collector, logger, Path(folder) / "checkpoints", steps, progress=False).train()
            logger.close()
        envs.close()
        return collector.global_step

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = alternate(args.rounds, {"compiled": runner(args.steps, True), "eager": runner(args.steps, False)})
    print_table("compile_cpu", results, "compiled", "eager")


if __name__ == "__main__":
    main()
