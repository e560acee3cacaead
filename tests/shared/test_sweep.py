"""``scenariolab sweep`` and the sweep report on a real local Ray, shared by the tests of this module.

Every trial trains ``cartpole_ppo`` at ``--budget smoke`` (2048 steps), so the tests check the sweep
machinery (validation, streaming into sweep.json, retries, resume) rather than learning.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shared.cli import main
from shared.sweep import git_commit
from shared.sweep_report import write_sweep_report

SCENARIO = "scenarios/classic/cartpole_ppo.yaml"


@pytest.fixture(scope="module")
def ray_address():
    """Start one local Ray for the module (start-up takes about 10 s) and return its GCS address."""
    from shared.sweep import import_ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray = import_ray(local_only=True)  # keeps the node address, and so the --address below, on 127.0.0.1
    info = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir="/tmp/ray", _node_ip_address="127.0.0.1")
    address = info.address_info["address"]
    assert address.startswith("127.0.0.1:")
    yield address
    ray.shutdown()


@pytest.fixture(scope="module")
def finished_sweep(ray_address, tmp_path_factory):
    """Run a 2-seed x 2-point sweep once; return its folder and exit status."""
    out = tmp_path_factory.mktemp("sweep") / "lr"
    status = main(["sweep", SCENARIO, "--seeds", "2", "--grid", "agent.learning_rate=1e-3,3e-4", "--budget", "smoke", "--out", str(out)])
    return out, status


def read_record(folder: Path) -> dict:
    return json.loads((folder / "sweep.json").read_text())


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_sweep_runs_every_trial(finished_sweep):
    out, status = finished_sweep
    assert status == 0
    record = read_record(out)
    assert record["scenario"] == "cartpole_ppo"
    assert record["grid"] == {"agent.learning_rate": ["1e-3", "3e-4"]}
    assert record["seeds"] == [0, 1]
    assert record["git_commit"] == git_commit()
    assert record["command"].startswith("scenariolab sweep ")
    assert "--grid agent.learning_rate=1e-3,3e-4" in record["command"]
    assert sorted(t["id"] for t in record["trials"]) == ["p00-seed0", "p00-seed1", "p01-seed0", "p01-seed1"]
    for trial in record["trials"]:
        assert trial["status"] == "done"
        assert trial["attempts"] == 1
        assert trial["train_steps"] >= 2048
        metrics = json.loads((out / trial["run_dir"] / "metrics.json").read_text())
        assert metrics["seed"] == trial["seed"]
        assert metrics["metrics"]["return_mean"] == pytest.approx(trial["metrics"]["return_mean"])
    scenario = (out / "trials" / "p01-seed1" / "scenario.yaml").read_text()
    assert "learning_rate: 3e-4" in scenario or "learning_rate: '3e-4'" in scenario


@pytest.mark.slow
def test_sweep_report_files(finished_sweep):
    out, _ = finished_sweep
    report = write_sweep_report(out)
    text = report.read_text()
    commit = git_commit()
    assert "agent.learning_rate=1e-3" in text
    assert "agent.learning_rate=3e-4" in text
    assert "IQM 95% CI" in text
    assert "P(X > Y)" in text
    assert text.count(f"at git commit `{commit}`") >= 3
    for name in ("bars.png", "profiles.png", "learning_curves.png"):
        assert (out / "report_plots" / name).read_bytes().startswith(b"\x89PNG")
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3
    assert "report_plots/" not in page


@pytest.mark.slow
def test_sweep_rerun_skips_done_trials(finished_sweep, capsys):
    out, _ = finished_sweep
    before = {p: p.stat().st_mtime_ns for p in out.glob("trials/*/metrics.json")}
    status = main(["sweep", SCENARIO, "--seeds", "2", "--grid", "agent.learning_rate=1e-3,3e-4", "--budget", "smoke", "--out", str(out)])
    assert status == 0
    assert "all 4 trials already done" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.glob("trials/*/metrics.json")} == before


@pytest.mark.slow
def test_killed_sweep_resumes(ray_address, tmp_path):
    out = tmp_path / "killed"
    args = ["sweep", SCENARIO, "--seeds", "2", "--grid", "agent.learning_rate=1e-3", "--budget", "smoke", "--cpus-per-trial", "2", "--out", str(out)]
    # The first sweep joins this module's Ray through --address. With 2 CPUs per trial on a
    # 2-CPU Ray the trials run one after the other, so the kill leaves one done and one in flight.
    process = subprocess.Popen([sys.executable, "-m", "shared.cli", *args, "--address", ray_address], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    done: list[dict] = []
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if (out / "sweep.json").exists():
                done = [t for t in read_record(out)["trials"] if t["status"] == "done"]
                if done:
                    break
            time.sleep(0.5)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert len(done) == 1, "the first trial did not finish before the deadline"
    first = out / done[0]["run_dir"] / "metrics.json"
    first_mtime = first.stat().st_mtime_ns

    status = main(args)
    assert status == 0
    record = read_record(out)
    trials = {t["id"]: t for t in record["trials"]}
    assert all(t["status"] == "done" for t in trials.values())
    assert trials[done[0]["id"]]["attempts"] == 1
    assert first.stat().st_mtime_ns == first_mtime
    assert len(record["resumed"]) == 1


@pytest.mark.slow
def test_failing_trial_retried_then_recorded(ray_address, tmp_path, capsys):
    # checkpoint_path passes validation (the file is only opened at run time), and only the
    # warm-started grid point opens it, so the second point fails in every attempt while the
    # first one trains normally.
    out = tmp_path / "failing"
    command = ["sweep", SCENARIO, "--seeds", "1", "--set", "checkpoint_path=no_such_checkpoint", "--grid", "warm_start=false,true"]
    status = main([*command, "--budget", "smoke", "--out", str(out)])
    assert status == 1
    trials = {t["id"]: t for t in read_record(out)["trials"]}
    assert trials["p00-seed0"]["status"] == "done"
    failed = trials["p01-seed0"]
    assert failed["status"] == "failed"
    assert failed["attempts"] == 3
    assert len(failed["errors"]) == 3
    assert failed["error"].startswith("CheckpointError")
    assert "no_such_checkpoint" in failed["error"]
    assert "failed: p01-seed0 after 3 attempts" in capsys.readouterr().out


def run_bad(args: list[str], capsys) -> tuple[int, list[str]]:
    status = main(args)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return status, lines


def test_invalid_grid_key_exits_2(tmp_path, capsys):
    status, lines = run_bad(["sweep", SCENARIO, "--seeds", "1", "--grid", "agent.no_such_option=1,2", "--out", str(tmp_path / "s")], capsys)
    assert status == 2
    assert len(lines) == 1
    assert "agent.no_such_option" in lines[0]
    assert not (tmp_path / "s" / "sweep.json").exists()


def test_invalid_grid_value_exits_2(tmp_path, capsys):
    status, lines = run_bad(["sweep", SCENARIO, "--seeds", "1", "--grid", "agent.learning_rate=1e-3,fast", "--out", str(tmp_path / "s")], capsys)
    assert status == 2
    assert len(lines) == 1
    assert "agent.learning_rate" in lines[0]
    assert "agent.learning_rate=fast" in lines[0]


def test_malformed_grid_option_exits_2(tmp_path, capsys):
    status, lines = run_bad(["sweep", SCENARIO, "--grid", "agent.learning_rate", "--out", str(tmp_path / "s")], capsys)
    assert status == 2
    assert len(lines) == 1
    assert "KEY=V1,V2" in lines[0]


@pytest.mark.slow
def test_different_scenario_folder_exits_2(finished_sweep, capsys):
    out, _ = finished_sweep
    before = (out / "sweep.json").read_bytes()
    status, lines = run_bad(["sweep", "scenarios/classic/cartpole_dqn.yaml", "--seeds", "2", "--grid", "agent.learning_rate=1e-3,3e-4", "--budget", "smoke", "--out", str(out)], capsys)
    assert status == 2
    assert len(lines) == 1
    assert "sweep.json" in lines[0]
    assert "cartpole_ppo" in lines[0]
    assert (out / "sweep.json").read_bytes() == before


@pytest.mark.slow
def test_different_grid_folder_exits_2(finished_sweep, capsys):
    out, _ = finished_sweep
    status, lines = run_bad(["sweep", SCENARIO, "--seeds", "2", "--grid", "agent.learning_rate=1e-3", "--budget", "smoke", "--out", str(out)], capsys)
    assert status == 2
    assert len(lines) == 1
    assert "grid" in lines[0]


def test_unreachable_address_exits_2_quickly(tmp_path, capsys):
    address = f"127.0.0.1:{free_loopback_port()}"
    started = time.monotonic()
    status, lines = run_bad(["sweep", SCENARIO, "--seeds", "1", "--budget", "smoke", "--address", address, "--out", str(tmp_path / "s")], capsys)
    assert time.monotonic() - started < 10
    assert status == 2
    assert len(lines) == 1
    assert address in lines[0]
    assert not (tmp_path / "s" / "sweep.json").exists()


def test_trial_empties_a_leftover_folder(tmp_path):
    # A worker that Ray gave up on can recreate the trial folder after the sweep emptied it for the
    # retry. The retry must then start from an empty folder instead of failing on the existing one.
    import logging

    from shared.sweep import run_trial

    run_path = tmp_path / "trials" / "p00-seed0"
    (run_path / "checkpoints").mkdir(parents=True)
    (run_path / "checkpoints" / "stale.json").write_text("{}")
    logger = logging.getLogger("scenariolab")
    level = logger.level
    try:
        result = run_trial(SCENARIO, [], "smoke", 0, str(run_path))
    finally:
        logger.setLevel(level)
    assert not (run_path / "checkpoints" / "stale.json").exists()
    assert (run_path / "metrics.json").is_file()
    assert result["train_steps"] >= 2048
