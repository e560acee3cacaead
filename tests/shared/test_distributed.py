"""Multi-process PPO under torchrun: per-rank seeds and budget, rank-0 output, learning on CartPole."""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shared.cli import _scale_learning_rate, main
from shared.distributed import TORCHRUN_VARIABLES, rank_budget, rank_seed
from shared.errors import ScenarioError
from shared.scenario import load_scenario
from shared.stats import bootstrap_difference_ci

ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = Path(sys.executable).with_name("torchrun")

# Runs under torchrun: every rank trains N iterations on its own envs, then rank 0 prints the
# largest difference between its agent's state (weights, optimiser-free buffers such as the
# observation statistics, the Lagrange multiplier) and rank 1's. N, the scenario and its --set
# overrides come from the command line.
SYNC_SCRIPT = """
import sys
import torch
import torch.distributed as dist
from shared.distributed import broadcast_agent, init_distributed, rank_seed, shutdown
from shared.registry import get_kind
from shared.rollout import VectorCollector
from shared.scenario import load_scenario
from shared.training import seed_everything

context = init_distributed("cpu")
loaded = load_scenario(sys.argv[2], sys.argv[3:])
kind = get_kind(loaded.scenario.kind)
seed = rank_seed(0, context.rank)
seed_everything(seed)
envs = kind.make_vector_env(loaded, seed)
agent = kind.build_agent(loaded, envs, 2048, seed)
broadcast_agent(agent)
collector = VectorCollector(envs, seed)
for _ in range(int(sys.argv[1])):
    logs = agent.train_iteration(collector)
state = [tensor for name, module in sorted(agent.modules().items()) for tensor in module.state_dict().values()]
flat = torch.cat([tensor.detach().flatten().double() for tensor in state])
gathered = [torch.zeros_like(flat) for _ in range(context.world_size)]
dist.all_gather(gathered, flat)
if context.is_main:
    print("max_abs_diff", float((gathered[0] - gathered[1]).abs().max()))
shutdown()
"""

def test_rank_seeds_are_far_apart():
    assert rank_seed(7, 0) == 7
    assert rank_seed(7, 1) == 1_000_007
    assert rank_seed(7, 3) == 3_000_007


def test_rank_budget_rounds_up_equally():
    assert rank_budget(50_000, 2) == 25_000
    assert rank_budget(5, 2) == 3
    assert rank_budget(10, 3) == 4
    assert rank_budget(2048, 1) == 2048


def test_distributed_without_torchrun_exits_2(tmp_path, monkeypatch, capsys):
    for name in TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    status = main(["run", "scenarios/classic/cartpole_ppo.yaml", "--budget", "smoke", "--distributed", "--out", str(tmp_path)])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert status == 2
    assert len(lines) == 1
    assert "torchrun" in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_invalid_allreduce_variable_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SCENARIOLAB_ALLREDUCE", "nccl")
    status = main(["run", "scenarios/classic/cartpole_ppo.yaml", "--budget", "smoke", "--distributed", "--out", str(tmp_path)])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert status == 2
    assert len(lines) == 1
    assert "SCENARIOLAB_ALLREDUCE: invalid value 'nccl'; set it to 'gloo' or leave it unset" in lines[0]
    assert list(tmp_path.iterdir()) == []



def test_lr_scaling_without_distributed_exits_2(tmp_path, capsys):
    status = main(["run", "scenarios/classic/cartpole_ppo.yaml", "--budget", "smoke", "--lr-scaling", "sqrt", "--out", str(tmp_path)])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert status == 2
    assert len(lines) == 1
    assert "--lr-scaling: applies only with --distributed" in lines[0]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("rule", "factor"), [(None, 4.0), ("linear", 4.0), ("sqrt", 2.0), ("none", 1.0)])
def test_lr_scaling_rules_for_four_ranks(rule, factor):
    # cartpole_reinforce sets both of REINFORCE's rates to 2e-3; the default rule is linear.
    args = argparse.Namespace(scenario="scenarios/classic/cartpole_reinforce.yaml", set=[], budget="default", lr_scaling=rule)
    scaled = _scale_learning_rate(args, load_scenario(args.scenario, []), world_size=4)
    assert scaled.agent_config.learning_rate == pytest.approx(2e-3 * factor)
    assert scaled.agent_config.value_learning_rate == pytest.approx(2e-3 * factor)
    assert f"learning_rate: {2e-3 * factor!r}" in scaled.to_yaml()


# Settings under which the ranks could drift apart or wait on each other. Each rank gathers
# observation and return statistics from its own envs and measures the KL for the early stop on its own
# minibatches. PPO-Lagrangian on short highway episodes adds a multiplier fed by each rank's
# finished episodes and a number of valid steps that differs between ranks.
SYNC_CASES = {
    "cartpole": (3, "scenarios/classic/cartpole_ppo.yaml", []),
    "obs_stats_and_target_kl": (
        3, "scenarios/classic/cartpole_ppo.yaml",
        ["agent.normalize_observation=true", "agent.normalize_reward=true", "agent.target_kl=0.002"],
    ),
    "ppo_lagrangian": (
        3, "scenarios/driving/highway_ppo_lagrangian.yaml",
        [
            "env.num_envs=2", "env.config.duration=6", "env.config.vehicles_count=8", "agent.num_steps=16",
            "agent.update_epochs=2", "agent.normalize_observation=true", "agent.normalize_reward=true", "agent.target_kl=0.002",
        ],
    ),
    # DQN starts training and updates its target network by counts of valid steps. Here rank 0
    # has 302 valid steps after 8 iterations and rank 1 only 299, so each rank's own count would
    # start training at a different iteration.
    "dqn_learning_start_and_target": (
        12, "scenarios/classic/cartpole_dqn.yaml",
        ["env.num_envs=4", "agent.train_frequency=10", "agent.gradient_steps=2", "agent.learning_starts=300", "agent.target_update_interval=60", "agent.hidden_sizes=[32]"],
    ),
}


def run_sync_script(tmp_path: Path, case: str, allreduce: str = "") -> list[str]:
    """Run SYNC_SCRIPT under torchrun with 2 ranks; return its max_abs_diff lines."""
    script = tmp_path / "sync.py"
    script.write_text(SYNC_SCRIPT)
    iterations, scenario, overrides = SYNC_CASES[case]
    command = [str(TORCHRUN), "--nproc-per-node", "2", "--standalone", str(script), str(iterations), scenario, *overrides]
    environment = {**os.environ, "SCENARIOLAB_ALLREDUCE": allreduce}
    result = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return [line for line in result.stdout.splitlines() if line.startswith("max_abs_diff")]


@pytest.mark.slow
@pytest.mark.parametrize("allreduce", ["", "gloo"], ids=["shared_memory", "gloo"])
def test_ranks_keep_identical_weights(tmp_path, allreduce):
    # Ranks seed their envs and initial weights differently (without the broadcast the weights
    # differ by about 1 after 3 iterations), so equal weights show that the broadcast and the
    # gradient all-reduce keep them in step.
    assert run_sync_script(tmp_path, "cartpole", allreduce) == ["max_abs_diff 0.0"]


@pytest.mark.slow
@pytest.mark.parametrize("case", ["obs_stats_and_target_kl", "ppo_lagrangian", "dqn_learning_start_and_target"])
def test_ranks_agree_on_statistics_and_early_stops(tmp_path, case):
    # A rank that stopped its epochs early alone would hang in the next all-reduce, so the
    # subprocess timeout would fail the test. Different statistics show in the state difference.
    assert run_sync_script(tmp_path, case) == ["max_abs_diff 0.0"]


def train_cartpole(out: Path, seed: int, processes: int) -> tuple[dict, list[dict]]:
    """Train cartpole_ppo at its default budget in one process or under torchrun; return metrics.json and metrics.jsonl."""
    if processes == 1:
        command = [sys.executable, "-m", "shared.cli", "run", "scenarios/classic/cartpole_ppo.yaml"]
    else:
        command = [str(TORCHRUN), "--nproc-per-node", str(processes), "--standalone", "-m", "shared.cli", "run", "scenarios/classic/cartpole_ppo.yaml", "--distributed"]
    command += ["--seed", str(seed), "--no-progress", "--out", str(out)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    run_dirs = list((out / "cartpole_ppo").iterdir())
    assert len(run_dirs) == 1, "only rank 0 may create a run folder"
    summary = json.loads((run_dirs[0] / "metrics.json").read_text())
    records = [json.loads(line) for line in (run_dirs[0] / "metrics.jsonl").read_text().splitlines()]
    return summary, records


def learning_curve_mean(records: list[dict], budget: int = 50_000, bins: int = 10) -> float:
    """Return the mean over ``bins`` equal global_step spans of the mean training episodic return in each span."""
    points = [(record["global_step"], record["charts/episodic_return"]) for record in records if "charts/episodic_return" in record]
    steps = np.array([step for step, _ in points])
    returns = np.array([value for _, value in points])
    edges = np.linspace(0, budget, bins + 1)
    spans = [returns[(steps >= low) & (steps < high)] for low, high in zip(edges[:-1], edges[1:])]
    return float(np.mean([span.mean() if span.size else 0.0 for span in spans]))


@pytest.mark.slow
def test_two_processes_learn_like_one(tmp_path):
    # Seeds 0-4 at the 50k-step default budget, one process and two alternating. Each rank steps
    # its own 8 envs for 25k steps, so an update averages 2 x 256 steps and the 2-process run makes
    # half as many updates, at twice the learning rate (--lr-scaling linear, the default). Neither
    # the final evaluation nor the learning curve may differ beyond seed-to-seed noise: the
    # bootstrap CI of the difference of the means contains 0 for both.
    finals: dict[int, list[float]] = {1: [], 2: []}
    curves: dict[int, list[float]] = {1: [], 2: []}
    speeds: dict[int, list[float]] = {1: [], 2: []}
    for seed in range(5):
        for processes in (1, 2):
            summary, records = train_cartpole(tmp_path / f"{processes}-{seed}", seed, processes)
            finals[processes].append(summary["metrics"]["return_mean"])
            curves[processes].append(learning_curve_mean(records))
            speeds[processes].append(summary["train_steps"] / summary["train_seconds"])
            random_return = summary["baselines"]["random"]["metrics"]["return_mean"]
            assert summary["metrics"]["return_mean"] > 3 * random_return

    # Rank 0's output of the last 2-process run: the global step counts both ranks' steps.
    assert summary["world_size"] == 2
    assert 50_000 <= summary["train_steps"] <= 50_000 + 2 * 8 * 32  # each rank may overshoot by one rollout
    assert max(record["global_step"] for record in records) == summary["train_steps"]
    assert any("charts/SPS" in record for record in records)

    for name, values in (("final return", finals), ("learning-curve mean", curves)):
        low, high = bootstrap_difference_ci(values[2], values[1])
        print(f"{name}: 1 process {values[1]}, 2 processes {values[2]}, 95% CI of the difference [{low:.1f}, {high:.1f}]")
        assert low <= 0.0 <= high
    assert np.mean(finals[2]) >= 400  # solved (500) on most seeds
    # Speed is measured by benchmarks/distributed_ppo.py, not asserted here: other load on the
    # machine slows the 2-process run far more than one process (each all-reduce needs both ranks
    # on a core at once). The ratio is printed for the log.
    ratio = float(np.median(speeds[2]) / np.median(speeds[1]))
    print(f"training steps/s: 1 process {speeds[1]}, 2 processes {speeds[2]}, ratio of medians {ratio:.2f}")
