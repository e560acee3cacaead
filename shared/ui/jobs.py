"""Training jobs started from the Runs page: one ``scenariolab run`` subprocess per job.

A job is started with :class:`subprocess.Popen` in its own session, so a Streamlit rerun, a closed
browser tab or a second session never restarts, blocks or kills it. The registry is a JSON file
``<runs>/.jobs/jobs.json``, written atomically under a file lock, and each job's stdout and
stderr go to ``<runs>/.jobs/<id>.log``. Stopping sends SIGINT to the job's process group, as
Ctrl-C in a terminal would, so the trainer saves its latest checkpoint before it exits.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

logger = logging.getLogger("scenariolab.ui.jobs")

JOBS_FOLDER = ".jobs"
REGISTRY_NAME = "jobs.json"

# Popen handles of the jobs this server process started, so their exit status can be collected
# (and the child reaped) across reruns. Jobs from an earlier server process are checked via /proc.
_handles: dict[str, subprocess.Popen[bytes]] = {}


@dataclass
class Job:
    """One training subprocess and what the page needs to find its output."""

    id: str
    scenario: str
    scenario_name: str
    budget: str
    seed: int
    command: list[str]
    pid: int
    started: float
    log: str
    process_start: str | None = None
    stop_requested: bool = False
    returncode: int | None = None
    ended: float | None = None


def cli_run_command(scenario: str, budget: str, seed: int, out: Path) -> list[str]:
    """Build ``scenariolab run SCENARIO --budget B --seed N --out DIR --no-progress`` with this interpreter."""
    return [sys.executable, "-m", "shared.cli", "run", scenario, "--budget", budget, "--seed", str(seed), "--out", str(out), "--no-progress"]


def _jobs_folder(runs_root: Path) -> Path:
    return runs_root / JOBS_FOLDER


@contextmanager
def _locked_registry(runs_root: Path) -> Iterator[list[Job]]:
    """Yield the job list under an exclusive lock and write it back atomically afterwards."""
    folder = _jobs_folder(runs_root)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "jobs.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        jobs = _read_registry(folder / REGISTRY_NAME)
        before = [asdict(job) for job in jobs]
        yield jobs
        after = [asdict(job) for job in jobs]
        if after != before:
            temporary = folder / f".{REGISTRY_NAME}.{os.getpid()}.tmp"
            temporary.write_text(json.dumps(after, indent=2), encoding="utf-8")
            os.replace(temporary, folder / REGISTRY_NAME)


def _read_registry(path: Path) -> list[Job]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        # A damaged registry must not take the Runs page down; the jobs themselves keep running.
        logger.error("job registry %s is unreadable, so a new one is started: %s", path, error)
        return []
    jobs = []
    for entry in data if isinstance(data, list) else []:
        try:
            jobs.append(Job(**entry))
        except TypeError as error:
            logger.error("skipping a job entry in %s: %s", path, error)
    return jobs


def read_jobs(runs_root: Path) -> list[Job]:
    """Return the registered jobs, newest first, without changing the registry."""
    jobs = _read_registry(_jobs_folder(runs_root) / REGISTRY_NAME)
    return sorted(jobs, key=lambda job: job.started, reverse=True)


def _process_start_time(pid: int) -> str | None:
    """Return the kernel's start time of ``pid`` (field 22 of /proc/PID/stat), or None if gone.

    Comparing it with the value stored at launch distinguishes a live job from an unrelated process
    that later received the same pid.
    Limitation: needs Linux /proc; elsewhere a job started by an earlier server process is
    reported as ended once its pid is free.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces, so split after it.
    fields = stat[stat.rfind(")") + 2 :].split()
    if fields and fields[0] == "Z":
        return None
    return fields[19] if len(fields) > 19 else None


def start_job(runs_root: Path, command: list[str], *, scenario: str, scenario_name: str, budget: str, seed: int, cwd: Path | None = None) -> Job:
    """Start ``command`` detached from this process and record it in the registry."""
    folder = _jobs_folder(runs_root)
    folder.mkdir(parents=True, exist_ok=True)
    job_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    log_path = folder / f"{job_id}.log"
    environment = dict(os.environ, PYTHONUNBUFFERED="1")

    started = time.time()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            env=environment,
            start_new_session=True,
        )
    _handles[job_id] = process

    job = Job(
        id=job_id,
        scenario=scenario,
        scenario_name=scenario_name,
        budget=budget,
        seed=seed,
        command=command,
        pid=process.pid,
        started=started,
        log=str(log_path),
        process_start=_process_start_time(process.pid),
    )
    with _locked_registry(runs_root) as jobs:
        jobs.append(job)
    logger.info("started job %s (pid %d): %s", job_id, process.pid, " ".join(command))
    return job


def is_alive(job: Job) -> bool:
    """Return True while the job's process runs; collect its exit status when this process started it."""
    handle = _handles.get(job.id)
    if handle is not None:
        return handle.poll() is None
    if job.returncode is not None or job.process_start is None:
        return False
    return _process_start_time(job.pid) == job.process_start


def refresh(runs_root: Path) -> list[Job]:
    """Record the exit of jobs that have ended and return all jobs, newest first."""
    with _locked_registry(runs_root) as jobs:
        for job in jobs:
            if job.ended is not None or is_alive(job):
                continue
            handle = _handles.get(job.id)
            job.returncode = handle.returncode if handle is not None else None
            job.ended = time.time()
            logger.info("job %s (pid %d) ended with status %s", job.id, job.pid, job.returncode)
        snapshot = list(jobs)
    return sorted(snapshot, key=lambda job: job.started, reverse=True)


def status(job: Job) -> str:
    """Return running, stopping, finished, stopped, failed or lost (ended with an unknown status)."""
    if job.ended is None and is_alive(job):
        return "stopping" if job.stop_requested else "running"
    if job.stop_requested:
        return "stopped"
    if job.returncode is None:
        return "lost"
    return "finished" if job.returncode == 0 else "failed"


def stop_job(runs_root: Path, job_id: str) -> bool:
    """Send SIGINT to a running job's process group; return False when it had already ended."""
    with _locked_registry(runs_root) as jobs:
        job = next((job for job in jobs if job.id == job_id), None)
        if job is None or not is_alive(job):
            return False
        try:
            os.killpg(job.pid, signal.SIGINT)
        except ProcessLookupError:
            return False
        job.stop_requested = True
    logger.info("sent SIGINT to job %s (pid %d)", job_id, job.pid)
    return True


def find_run_folder(runs_root: Path, job: Job) -> Path | None:
    """Return the run folder the job's CLI created: newest ``<name>/*-seed<N>*`` made after its start."""
    scenario_dir = runs_root / job.scenario_name
    if not scenario_dir.is_dir():
        return None
    candidates = [
        path
        for path in scenario_dir.iterdir()
        # The CLI creates the folder after the job starts; 2 s of slack covers coarse file timestamps.
        if path.is_dir() and f"-seed{job.seed}" in path.name and path.stat().st_mtime >= job.started - 2
    ]
    return max(candidates, key=lambda path: path.stat().st_mtime, default=None)


def log_tail(job: Job, lines: int = 20) -> str:
    """Return the last ``lines`` lines of the job's log, or an empty string if it cannot be read."""
    try:
        with open(job.log, "rb") as file:
            file.seek(0, os.SEEK_END)
            size = file.tell()
            file.seek(max(0, size - 16_384))
            text = file.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
