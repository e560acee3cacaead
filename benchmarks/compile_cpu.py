"""Does ``compile: true`` (torch.compile) speed up training on CPU? PPO on CartPole, eager against compiled.

No target: the result decides the default, which stays eager (``compile: false``) unless the ratio
is clearly above 1. Compilation time is counted, as a user pays it once per run.
Run: `.venv/bin/python benchmarks/compile_cpu.py [--steps N] [--rounds R]`.
"""

from __future__ import annotations

import argparse
import torch

from bench_common import alternate, print_table, scenariolab_runner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    scenario = "scenarios/classic/cartpole_ppo.yaml"
    runners = {"compiled": scenariolab_runner(scenario, args.steps, compiled=True), "eager": scenariolab_runner(scenario, args.steps)}
    results = alternate(args.rounds, runners)
    print_table("compile_cpu", results, "compiled", "eager")


if __name__ == "__main__":
    main()
