"""Training jobs started from the Runs page: a real subprocess, its registry, SIGINT and exit status.

The job here is a small Python trainer stand-in that writes a run folder the way `scenariolab run`
does and saves a checkpoint on Ctrl-C, so the test does not depend on how long real training takes.
"""

from __future__ import annotations

import json
import sys
import textwrap
import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

from tests.ui.runfolders import APP
from shared.ui import jobs

TRAINER = textwrap.dedent(
    """
    import json, signal, sys, time
    from pathlib import Path

    signal.signal(signal.SIGINT, signal.default_int_handler)
    run = Path(sys.argv[1]) / "toy" / (time.strftime("%Y%m%d-%H%M%S") + "-seed5")
    run.mkdir(parents=True)
    step = 0
    try:
        with open(run / "metrics.jsonl", "w") as log:
            while True:
                step += 100
                log.write(json.dumps({"global_step": step, "charts/episodic_return": step / 10}) + "\\n")
                log.flush()
                time.sleep(0.05)
    except KeyboardInterrupt:
        (run / "checkpoints").mkdir()
        (run / "checkpoints" / "latest.safetensors").write_bytes(b"")
        (run / "checkpoints" / "latest.json").write_text(json.dumps({"global_step": step}))
        sys.exit(130)
    """
)


def wait_for(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def start_trainer(runs_dir: Path) -> jobs.Job:
    command = [sys.executable, "-c", TRAINER, str(runs_dir)]
    return jobs.start_job(runs_dir, command, scenario="scenarios/toy.yaml", scenario_name="toy", budget="smoke", seed=5)


def test_cli_command_shape(tmp_path: Path) -> None:
    command = jobs.cli_run_command("scenarios/quickstart.yaml", "smoke", 3, tmp_path)
    assert command == [sys.executable, "-m", "shared.cli", "run", "scenarios/quickstart.yaml", "--budget", "smoke", "--seed", "3", "--out", str(tmp_path), "--no-progress"]


def test_job_runs_and_stops_with_checkpoint(runs_dir: Path) -> None:
    job = start_trainer(runs_dir)
    wait_for(lambda: (folder := jobs.find_run_folder(runs_dir, job)) is not None and (folder / "metrics.jsonl").stat().st_size > 0)
    [listed] = jobs.refresh(runs_dir)
    assert listed.id == job.id
    assert jobs.status(listed) == "running"

    assert jobs.stop_job(runs_dir, job.id) is True
    wait_for(lambda: jobs.status(jobs.refresh(runs_dir)[0]) == "stopped")
    [ended] = jobs.read_jobs(runs_dir)
    assert ended.returncode == 130
    assert ended.stop_requested is True
    run_folder = jobs.find_run_folder(runs_dir, ended)
    saved = json.loads((run_folder / "checkpoints" / "latest.json").read_text())
    assert saved["global_step"] >= 100
    assert jobs.stop_job(runs_dir, job.id) is False


def test_runs_page_shows_stopped_job(runs_dir: Path) -> None:
    job = start_trainer(runs_dir)
    wait_for(lambda: jobs.find_run_folder(runs_dir, job) is not None)
    jobs.stop_job(runs_dir, job.id)
    wait_for(lambda: not jobs.is_alive(job))

    app = AppTest.from_file(APP, default_timeout=60).run()
    app.switch_page("shared/ui/runs.py").run()
    assert not app.exception, app.exception
    assert "The job was stopped. Saved checkpoints: latest." in [info.value for info in app.info]
    assert "Training jobs" in [header.value for header in app.subheader]


def test_runs_page_stop_button(runs_dir: Path) -> None:
    job = start_trainer(runs_dir)
    wait_for(lambda: jobs.find_run_folder(runs_dir, job) is not None)
    app = AppTest.from_file(APP, default_timeout=60).run()
    app.switch_page("shared/ui/runs.py").run()
    app.button(key=f"stop_{job.id}").click().run()
    assert not app.exception, app.exception
    wait_for(lambda: not jobs.is_alive(job))
    assert jobs.status(jobs.refresh(runs_dir)[0]) == "stopped"


def test_failed_job_shows_status_and_log(runs_dir: Path) -> None:
    command = [sys.executable, "-c", "import sys; print('budget.smoke: invalid value'); sys.exit(2)"]
    job = jobs.start_job(runs_dir, command, scenario="scenarios/toy.yaml", scenario_name="toy", budget="smoke", seed=0)
    wait_for(lambda: not jobs.is_alive(job))
    assert jobs.status(jobs.refresh(runs_dir)[0]) == "failed"

    app = AppTest.from_file(APP, default_timeout=60)
    app.session_state["language"] = "zh-CN"
    app.run()
    app.switch_page("shared/ui/runs.py").run()
    assert not app.exception, app.exception
    assert "任务失败，退出状态 2。日志末尾：" in [error.value for error in app.error]
    assert "budget.smoke: invalid value" in [code.value for code in app.code]

