"""Seeds x grid sweeps of one scenario, each trial a Ray task that runs the normal run pipeline.

A sweep folder contains ``sweep.json`` (scenario, grid, seeds, command, git commit and one entry per
trial with its status) and one run folder per trial under ``trials/``. ``sweep.json`` is rewritten
atomically whenever a trial starts or finishes, so a sweep killed halfway loses only the trials in
flight: running the same command again skips every trial recorded as ``done``.

Each trial runs ``load_scenario`` plus ``kind.run`` inside a Ray task rather than a
``scenariolab run`` subprocess. The task's result carries the metrics and the real exception back
to the driver, and ``max_calls=1`` gives every trial a fresh worker process, so a crash or leaked
global state (torch flags, RNGs, threads) stays inside that trial. Ray 2.6.3 is the newest release
that RecBole 1.2.1's dependency pins allow; only ``ray`` core is needed (no dashboard).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.errors import ScenarioError, located
from shared.rundir import atomic_write_json, check_writable

logger = logging.getLogger("scenariolab.sweep")

MAX_ATTEMPTS = 3  # one run plus two retries before a trial is recorded as failed
ADDRESS_TIMEOUT_S = 3.0
RAY_TEMP_DIR = "/tmp/ray"
SWEEP_FILE = "sweep.json"

# Fields that must match for a sweep folder to be resumed. A mismatch in any of them means a different sweep.
IDENTITY_FIELDS = ("scenario", "scenario_path", "grid", "seeds", "set", "budget")


@dataclass(frozen=True)
class Trial:
    """One (grid point, seed) pair and the ``--set`` overrides that produce it."""

    trial_id: str
    point: dict[str, str]
    seed: int

    def overrides(self, base: list[str]) -> list[str]:
        return [*base, *(f"{key}={value}" for key, value in self.point.items())]


def parse_grid(items: list[str]) -> dict[str, list[str]]:
    """Parse ``--grid key=v1,v2`` options into an ordered mapping of dotted key to raw values."""
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ScenarioError(located(None, "--grid", f"expected KEY=V1,V2,..., got {item!r}"))
        if key in grid:
            raise ScenarioError(located(None, f"--grid {key}", "given twice; list all its values in one --grid option"))
        parts = [part.strip() for part in values.split(",")]
        if not parts or any(part == "" for part in parts):
            raise ScenarioError(located(None, f"--grid {key}", f"expected comma-separated values, got {values!r}"))
        if len(set(parts)) != len(parts):
            raise ScenarioError(located(None, f"--grid {key}", f"repeated value in {values!r}"))
        grid[key] = parts
    return grid


def grid_points(grid: dict[str, list[str]]) -> list[dict[str, str]]:
    """Return the Cartesian product of the grid values, the first key varying slowest."""
    if not grid:
        return [{}]
    keys = list(grid)
    return [dict(zip(keys, combination)) for combination in itertools.product(*(grid[key] for key in keys))]


def make_trials(grid: dict[str, list[str]], seeds: list[int]) -> list[Trial]:
    """Number the trials ``p<point>-seed<seed>`` in grid order, seeds innermost."""
    return [
        Trial(f"p{index:02d}-seed{seed}", point, seed)
        for index, point in enumerate(grid_points(grid))
        for seed in seeds
    ]


def git_commit(folder: Path | None = None) -> str:
    """Return ``git rev-parse HEAD`` of the checkout holding this package, or ``unknown``."""
    where = folder or Path(__file__).resolve().parents[1]
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 and result.stdout.strip() else "unknown"


def sweep_command(args: argparse.Namespace, sweep_dir: Path) -> str:
    """Rebuild the sweep command line from the parsed options, so it can be pasted to resume."""
    parts = ["scenariolab", "sweep", args.scenario, "--seeds", str(args.seeds)]
    for item in args.grid:
        parts += ["--grid", item]
    for item in args.set:
        parts += ["--set", item]
    parts += ["--budget", args.budget, "--cpus-per-trial", f"{args.cpus_per_trial:g}", "--out", str(sweep_dir)]
    if args.address:
        parts += ["--address", args.address]
    return shlex.join(parts)


# Validation before Ray starts --------------------------------------------------------------------


def validate_points(scenario: str, base_overrides: list[str], trials: list[Trial], budget: str) -> Any:
    """Load the scenario once per grid point with its overrides and return the first loaded scenario.

    A bad grid key or value raises the loader's one-line ScenarioError, prefixed with the grid point,
    before any trial starts.
    """
    from shared.scenario import load_scenario

    first = None
    seen: set[tuple[tuple[str, str], ...]] = set()
    for trial in trials:
        key = tuple(trial.point.items())
        if key in seen:
            continue
        seen.add(key)
        try:
            loaded = load_scenario(scenario, trial.overrides(base_overrides), budget)
        except ScenarioError as error:
            point = ", ".join(f"{k}={v}" for k, v in trial.point.items()) or "no grid"
            raise ScenarioError(f"{error} (grid point {point})") from None
        first = first or loaded
    return first


def check_address(address: str) -> None:
    """Fail fast when ``--address HOST:PORT`` does not accept TCP connections.

    ``ray.init`` keeps retrying an unreachable GCS address (it gave up after 142 s in a run with
    Ray 2.6.3), so the sweep probes the port first with a short timeout.
    """
    # Limitation: the probe only shows that something accepts TCP on the port. Another service on
    # that port passes it, and ray.init then retries as described above.
    if address == "auto":
        return
    target = address.split("://", 1)[-1]
    host, sep, port_text = target.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ScenarioError(located(None, "--address", f"expected HOST:PORT of a Ray head node or 'auto', got {address!r}"))
    try:
        with socket.create_connection((host.strip("[]"), int(port_text)), timeout=ADDRESS_TIMEOUT_S):
            pass
    except OSError as error:
        reason = "timed out" if isinstance(error, TimeoutError) else (error.strerror or str(error))
        raise ScenarioError(located(None, "--address", f"cannot reach a Ray cluster at {address} ({reason}); start one with `ray start --head` or drop --address to use a local instance")) from None


# The sweep folder ----------------------------------------------------------------------------------


def open_sweep_folder(sweep_dir: Path, header: dict[str, Any], trials: list[Trial]) -> dict[str, Any]:
    """Create ``sweep.json`` or reload it, rejecting a folder made by a different scenario or grid.

    Trials recorded as ``done`` stay done. Trials that were running when an earlier sweep died, or
    that failed, go back to ``pending`` and their partial run folders are removed when they start.
    """
    path = sweep_dir / SWEEP_FILE
    if path.exists():
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise ScenarioError(located(str(path), None, f"cannot read the sweep record ({error}); pass another --out")) from None
        for field in IDENTITY_FIELDS:
            if record.get(field) != header[field]:
                raise ScenarioError(located(str(path), field, f"this sweep folder was made with {field} {record.get(field)!r}, not {header[field]!r}; pass another --out"))
        for entry in record["trials"]:
            if entry["status"] != "done":
                entry["status"] = "pending"
        record.setdefault("resumed", []).append({"command": header["command"], "git_commit": header["git_commit"], "time": header["started"]})
        return record
    record = {**header, "trials": [
        {"id": t.trial_id, "point": t.point, "seed": t.seed, "status": "pending", "attempts": 0, "run_dir": f"trials/{t.trial_id}", "errors": []}
        for t in trials
    ]}
    atomic_write_json(path, record)
    return record


# The Ray task --------------------------------------------------------------------------------------


def run_trial(scenario_path: str, overrides: list[str], budget: str, seed: int, run_path: str) -> dict[str, Any]:
    """Run one trial in this process: load the scenario with its overrides and call ``kind.run``."""
    from shared.kinds import RunOptions
    from shared.registry import get_kind
    from shared.rundir import RunDir
    from shared.scenario import load_scenario

    logging.getLogger("scenariolab").setLevel(logging.WARNING)
    loaded = load_scenario(scenario_path, overrides, budget)
    if not loaded.scenario.train:
        # An evaluation-only trial has nothing to train, so its seed picks its evaluation episodes.
        # Otherwise every seed would replay the same episodes. The offset from the scenario's first
        # evaluation seed keeps them apart from training seeds.
        evaluation_seed = loaded.scenario.evaluation.seeds[0] + seed
        loaded = load_scenario(scenario_path, [*overrides, f"evaluation.seeds=[{evaluation_seed}]"], budget)
    kind = get_kind(loaded.scenario.kind, str(loaded.source))
    path = Path(run_path)
    if path.exists():
        # An earlier attempt's folder. The sweep empties it when it submits a retry, but a worker
        # that Ray gave up on can still write there until it exits, so the attempt empties it again.
        shutil.rmtree(path)
    path.mkdir(parents=True)
    options = RunOptions(budget=budget, seed=seed, resume=False, progress=False, distributed=False)
    summary = kind.run(loaded, RunDir(path), options)
    if summary.get("interrupted"):
        raise RuntimeError(f"trial interrupted at global_step {summary.get('global_step')}")
    return {"metrics": summary.get("metrics", {}), "train_steps": summary.get("train_steps"), "train_seconds": summary.get("train_seconds")}


def _error_line(error: BaseException) -> str:
    """Name the trial's own exception (not Ray's wrapper) in one line."""
    cause = getattr(error, "cause", None) or error
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}".strip()


def is_loopback(address: str | None) -> bool:
    """Return True for no address (a local Ray) or a ``127.x``/``localhost``/``::1`` host."""
    if not address:
        return True
    host = address.split("://", 1)[-1].rpartition(":")[0].strip("[]")
    return host == "localhost" or host == "::1" or host.startswith("127.")


def import_ray(local_only: bool = True) -> Any:
    """Import ray quietly; for a Ray on this machine only, keep its node address on loopback.

    Ray 2.6.3 replaces 127.0.0.1 with the address of the interface that routes to 8.8.8.8 (a UDP
    socket ``connect``, which sends no packet) unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` is 0.
    The variable is read when ray is first imported, so it is set before the import.
    """
    if local_only:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    # Ray 2.6.3 imports the deprecated pkg_resources, and setuptools warns about it on every run.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
        import ray
    return ray


def _start_ray(address: str | None) -> bool:
    """Connect to ``address`` or start a local Ray; return True when this call started it."""
    ray = import_ray(local_only=is_loopback(address))

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        if address:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        else:
            ray.init(
                num_cpus=os.cpu_count() or 1,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.WARNING,
                _temp_dir=RAY_TEMP_DIR,
                _node_ip_address="127.0.0.1",
            )
    except ConnectionError as error:
        raise ScenarioError(located(None, "--address", f"cannot join the Ray cluster at {address}: {error}")) from None
    return True


class _Progress:
    """A tqdm bar of trials done, failed and remaining; nothing when stderr is not a TTY."""

    def __init__(self, total: int, done: int) -> None:
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, unit="trial", desc="sweep", dynamic_ncols=True)

    def update(self, done: int, failed: int, remaining: int, advanced: int) -> None:
        if self.bar is not None:
            self.bar.update(advanced)
            self.bar.set_postfix({"done": done, "failed": failed, "remaining": remaining})

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def execute(record: dict[str, Any], sweep_dir: Path, cpus_per_trial: float, budget: str, commit: str) -> dict[str, Any]:
    """Submit every pending trial as a Ray task, retry failures and stream results into ``sweep.json``.

    ``commit`` is the git commit of this invocation, stored per trial because a resumed sweep may
    run at a different commit than the one that started the folder.
    """
    ray = import_ray(local_only=False)
    remote = ray.remote(max_retries=0, max_calls=1)(run_trial).options(num_cpus=cpus_per_trial)
    path = sweep_dir / SWEEP_FILE
    entries = {entry["id"]: entry for entry in record["trials"]}

    def submit(entry: dict[str, Any]) -> Any:
        run_path = sweep_dir / entry["run_dir"]
        if run_path.exists():
            shutil.rmtree(run_path)  # a partial folder from a killed or failed attempt
        entry["status"] = "running"
        entry["attempts"] += 1
        entry["git_commit"] = commit
        trial = Trial(entry["id"], entry["point"], entry["seed"])
        return remote.remote(record["scenario_path"], trial.overrides(record["set"]), budget, entry["seed"], str(run_path))

    pending = [entry for entry in record["trials"] if entry["status"] == "pending"]
    for entry in pending:
        entry["attempts"] = 0
        entry["errors"] = []
        entry.pop("error", None)
    in_flight = {submit(entry): entry["id"] for entry in pending}
    atomic_write_json(path, record)

    done = sum(entry["status"] == "done" for entry in record["trials"])
    failed = 0
    progress = _Progress(len(record["trials"]), done)
    try:
        while in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            entry = entries[in_flight.pop(ready[0])]
            try:
                result = ray.get(ready[0])
            except (ray.exceptions.RayTaskError, ray.exceptions.WorkerCrashedError, ray.exceptions.RayActorError) as error:
                message = _error_line(error)
                entry["errors"].append(message)
                logger.warning("trial %s attempt %d failed: %s", entry["id"], entry["attempts"], message)
                if entry["attempts"] < MAX_ATTEMPTS:
                    in_flight[submit(entry)] = entry["id"]
                else:
                    entry["status"] = "failed"
                    entry["error"] = message
                    failed += 1
                    progress.update(done, failed, len(in_flight), 1)
            else:
                entry.update(status="done", finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), **result)
                done += 1
                progress.update(done, failed, len(in_flight), 1)
            atomic_write_json(path, record)
    finally:
        progress.close()
    return record


def default_sweep_dir(scenario_name: str) -> Path:
    return Path("runs") / "sweeps" / scenario_name


def run_sweep(args: argparse.Namespace) -> int:
    """Run ``scenariolab sweep``: validate every grid point, start or join Ray, run the pending trials.

    Returns 0 when every trial is done and 1 when some failed after their retries. Bad input
    (grid, scenario, folder, address) raises ScenarioError, which the CLI turns into exit status 2.
    """
    from shared.scenario import resolve_scenario_path

    if args.seeds < 1:
        raise ScenarioError(located(None, "--seeds", f"must be at least 1, got {args.seeds}"))
    if args.cpus_per_trial <= 0:
        raise ScenarioError(located(None, "--cpus-per-trial", f"must be positive, got {args.cpus_per_trial:g}"))
    grid = parse_grid(args.grid)
    scenario_path = resolve_scenario_path(args.scenario).resolve()
    base_seed = _base_seed(str(scenario_path), args.set, args.budget)
    seeds = [base_seed + offset for offset in range(args.seeds)]
    trials = make_trials(grid, seeds)
    loaded = validate_points(str(scenario_path), list(args.set), trials, args.budget)
    if args.address:
        check_address(args.address)
    sweep_dir = Path(args.out) if args.out else default_sweep_dir(loaded.name)
    check_writable(sweep_dir)
    sweep_dir = sweep_dir.resolve()

    header = {
        "scenario": loaded.name,
        "scenario_path": str(scenario_path),
        "grid": grid,
        "seeds": seeds,
        "set": list(args.set),
        "budget": args.budget,
        "command": sweep_command(args, sweep_dir),
        "git_commit": git_commit(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    record = open_sweep_folder(sweep_dir, header, trials)
    remaining = sum(entry["status"] != "done" for entry in record["trials"])
    logger.info("sweep folder: %s (%d trials, %d to run)", sweep_dir, len(record["trials"]), remaining)
    if remaining == 0:
        print(f"all {len(record['trials'])} trials already done; report with: scenariolab report {sweep_dir}")
        return 0

    ray = import_ray(local_only=is_loopback(args.address))
    started_here = _start_ray(args.address)
    try:
        record = execute(record, sweep_dir, args.cpus_per_trial, args.budget, header["git_commit"])
    finally:
        if started_here:
            ray.shutdown()
    done = sum(entry["status"] == "done" for entry in record["trials"])
    failed = [entry for entry in record["trials"] if entry["status"] == "failed"]
    print(f"sweep: {done} done, {len(failed)} failed; report with: scenariolab report {sweep_dir}")
    for entry in failed:
        print(f"failed: {entry['id']} after {entry['attempts']} attempts: {entry.get('error')}")
    return 1 if failed else 0


def _base_seed(scenario_path: str, overrides: list[str], budget: str) -> int:
    """Return the scenario's ``seed`` (after ``--set``); sweep seeds count up from it."""
    from shared.scenario import load_scenario

    return int(load_scenario(scenario_path, list(overrides), budget).scenario.seed)
