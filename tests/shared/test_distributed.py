"""Multi-process PPO under torchrun: per-rank seeds and budget, rank-0 output, learning on CartPole."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.cli import main
from shared.distributed import TORCHRUN_VARIABLES, rank_budget, rank_seed
from shared.errors import ScenarioError
from shared.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = Path(sys.executable).with_name("torchrun")

# Runs under torchrun: every rank trains 3 PPO iterations on its own envs, then rank 0 prints the
# largest difference between its weights and rank 1's.
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
loaded = load_scenario(sys.argv[1], [])
kind = get_kind(loaded.scenario.kind)
seed = rank_seed(0, context.rank)
seed_everything(seed)
envs = kind.make_vector_env(loaded, seed)
agent = kind.build_agent(loaded, envs, 2048, seed)
broadcast_agent(agent)
collector = VectorCollector(envs, seed)
for _ in range(3):
    agent.train_iteration(collector)
flat = torch.cat([t.detach().flatten().double() for t in agent.policy.state_dict().values()])
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


@pytest.mark.slow
@pytest.mark.parametrize("allreduce", ["", "gloo"], ids=["shared_memory", "gloo"])
def test_ranks_keep_identical_weights(tmp_path, allreduce):
    # Ranks seed their envs and initial weights differently (without the broadcast the weights
    # differ by about 1 after 3 iterations), so equal weights show that the broadcast and the
    # gradient all-reduce keep them in step.
    script = tmp_path / "sync.py"
    script.write_text(SYNC_SCRIPT)
    command = [str(TORCHRUN), "--nproc-per-node", "2", "--standalone", str(script), "scenarios/classic/cartpole_ppo.yaml"]
    environment = {**os.environ, "SCENARIOLAB_ALLREDUCE": allreduce}
    result = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("max_abs_diff")]
    assert lines == ["max_abs_diff 0.0"]


@pytest.mark.slow
def test_two_process_ppo_learns_cartpole(tmp_path):
    # The 50k-step default budget, as in the single-process test. Each rank steps its own 8 envs
    # for 25k steps, so every update averages 2 x 256 steps and the run makes half as many updates
    # as one process. PPO's final policy can fall back after training episodes have reached 500.
    # So the test requires one solved training episode (500 is CartPole-v1's maximum) and a final
    # return over 3x the random policy's, like the A2C learning test.
    command = [
        str(TORCHRUN), "--nproc-per-node", "2", "--standalone",
        "-m", "shared.cli", "run", "scenarios/classic/cartpole_ppo.yaml", "--distributed", "--no-progress", "--out", str(tmp_path),
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]

    run_dirs = list((tmp_path / "cartpole_ppo").iterdir())
    assert len(run_dirs) == 1, "only rank 0 may create a run folder"
    run_dir = run_dirs[0]
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["world_size"] == 2
    assert 50_000 <= summary["train_steps"] <= 50_000 + 2 * 8 * 32  # each rank may overshoot by one rollout
    random_return = summary["baselines"]["random"]["metrics"]["return_mean"]
    assert summary["metrics"]["return_mean"] > 3 * random_return

    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    training_returns = [record["charts/episodic_return"] for record in records if "charts/episodic_return" in record]
    assert max(training_returns) >= 475
    last_step = max(record["global_step"] for record in records)
    assert last_step == summary["train_steps"]
    assert any("charts/SPS" in record for record in records)
