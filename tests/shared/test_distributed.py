"""Multi-process PPO under torchrun: per-rank seeds and budget, rank-0 output, learning on CartPole."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from shared.cli import main
from shared.distributed import TORCHRUN_VARIABLES, rank_budget, rank_seed

ROOT = Path(__file__).resolve().parents[2]


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


@pytest.mark.slow
def test_two_process_ppo_solves_cartpole(tmp_path):
    # Same threshold as the single-process test: return_mean >= 195 after the 50k-step default
    # budget, which each of the 2 ranks splits as 25k steps (98 iterations of 8 envs x 32 steps).
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [
        str(torchrun), "--nproc-per-node", "2", "--standalone",
        "-m", "shared.cli", "run", "scenarios/classic/cartpole_ppo.yaml", "--distributed", "--no-progress", "--out", str(tmp_path),
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]

    run_dirs = list((tmp_path / "cartpole_ppo").iterdir())
    assert len(run_dirs) == 1, "only rank 0 may create a run folder"
    run_dir = run_dirs[0]
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["world_size"] == 2
    assert 50_000 <= summary["train_steps"] <= 50_000 + 2 * 8 * 32
    assert summary["metrics"]["return_mean"] >= 195

    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last_step = max(record["global_step"] for record in records)
    assert last_step == summary["train_steps"]
    assert any("charts/SPS" in record for record in records)
