"""Data-parallel PPO: training steps per second of 2 torchrun processes against 1 process, CartPole-v1.

Target: the 2-process run trains faster (ratio > 1) on a 2-core machine.
Every side runs `scenariolab run cartpole_ppo` at the default budget (50k steps) as subprocesses,
alternating, and reads `train_steps / train_seconds` from metrics.json, so start-up and evaluation
are left out. With `--distributed` each rank steps its own 8 envs, so an update averages 2 x 256
steps, at twice the learning rate (`--lr-scaling linear`, the default). The data-parallel side runs twice: with the shared-memory all-reduce that ranks on one host
use by default, and with gloo for every collective (`SCENARIOLAB_ALLREDUCE=gloo`). The ratio
compares the default against one process.
Run: `.venv/bin/python benchmarks/distributed_ppo.py [--rounds R] [--processes K]`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_common import print_table

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = "scenarios/classic/cartpole_ppo.yaml"


def train_sps(processes: int, out: Path, allreduce: str = "") -> tuple[float, float]:
    """Run one training at the default budget; return (steps per second, final evaluation return).

    ``allreduce="gloo"`` makes the ranks use gloo for the gradient all-reduce too.
    """
    bin_dir = Path(sys.executable).parent
    if processes == 1:
        command = [str(bin_dir / "scenariolab"), "run", SCENARIO, "--no-progress", "--out", str(out)]
    else:
        command = [
            str(bin_dir / "torchrun"), "--nproc-per-node", str(processes), "--standalone",
            "-m", "shared.cli", "run", SCENARIO, "--distributed", "--no-progress", "--out", str(out),
        ]
    environment = {**os.environ, "SCENARIOLAB_ALLREDUCE": allreduce}
    subprocess.run(command, cwd=ROOT, env=environment, check=True, capture_output=True, text=True)
    (run_dir,) = (out / "cartpole_ppo").iterdir()
    summary = json.loads((run_dir / "metrics.json").read_text())
    return summary["train_steps"] / summary["train_seconds"], float(summary["metrics"]["return_mean"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the medians over rounds are compared")
    parser.add_argument("--processes", type=int, default=2, help="torchrun processes of the data-parallel side")
    args = parser.parse_args()
    parallel = f"{args.processes} processes"
    sides = {parallel: (args.processes, ""), f"{parallel}, gloo all-reduce": (args.processes, "gloo"), "1 process": (1, "")}
    results: dict[str, list[float]] = {name: [] for name in sides}
    with tempfile.TemporaryDirectory() as folder:
        for round_index in range(args.rounds):
            for side_index, (name, (processes, allreduce)) in enumerate(sides.items()):
                sps, final_return = train_sps(processes, Path(folder) / f"{round_index}-{side_index}", allreduce)
                results[name].append(sps)
                print(f"round {round_index + 1}/{args.rounds} {name:<30} {sps:8.1f} steps/s, final return {final_return:.1f}", flush=True)
    print_table("distributed_ppo", results, parallel, "1 process")


if __name__ == "__main__":
    main()
