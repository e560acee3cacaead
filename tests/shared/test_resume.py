"""Ctrl-C saves a checkpoint at the next iteration boundary, and --resume matches an uninterrupted run."""

import json
import signal
import subprocess
import time

import pytest

from tests.conftest import scenariolab_command

OVERRIDES = ["--set", "budget.default=12000", "--set", "evaluation.episodes=3", "--set", "checkpoint.interval=0"]


def training_records(run_dir):
    records = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        record.pop("charts/SPS", None)
        records.append(record)
    return records


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["cartpole_ppo", "cartpole_dqn"])
def test_interrupt_then_resume_matches_uninterrupted(tmp_path, repo_root, scenario):
    command = [*scenariolab_command(), "run", scenario, "--no-progress", *OVERRIDES]

    reference = subprocess.run([*command, "--out", str(tmp_path / "full")], cwd=repo_root, capture_output=True, text=True, timeout=900)
    assert reference.returncode == 0, reference.stderr
    (reference_dir,) = (tmp_path / "full" / scenario).iterdir()

    # Interrupt once a few thousand steps are logged.
    process = subprocess.Popen([*command, "--out", str(tmp_path / "cut")], cwd=repo_root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    jsonl = None
    while time.time() < deadline:
        found = list((tmp_path / "cut").glob(f"{scenario}/*/metrics.jsonl"))
        if found and any(json.loads(line).get("global_step", 0) >= 3000 for line in found[0].read_text().splitlines() if line.strip()):
            jsonl = found[0]
            break
        if process.poll() is not None:
            break
        time.sleep(0.2)
    assert jsonl is not None, "training did not reach step 3000 before finishing"
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr
    assert "--resume" in stdout
    cut_dir = jsonl.parent
    assert (cut_dir / "checkpoints" / "latest.safetensors").exists()
    assert not (cut_dir / "metrics.json").exists()
    stopped_at = json.loads((cut_dir / "checkpoints" / "latest.json").read_text())["global_step"]
    assert 3000 <= stopped_at < 12000

    resumed = subprocess.run([*command, "--out", str(tmp_path / "cut"), "--resume", str(cut_dir)], cwd=repo_root, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr

    assert training_records(cut_dir) == training_records(reference_dir)
    reference_metrics = json.loads((reference_dir / "metrics.json").read_text())
    resumed_metrics = json.loads((cut_dir / "metrics.json").read_text())
    assert resumed_metrics["metrics"] == reference_metrics["metrics"]
    assert resumed_metrics["train_steps"] == reference_metrics["train_steps"]
