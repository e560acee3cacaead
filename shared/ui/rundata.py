"""Reading run folders for the Runs page, without Streamlit and without importing torch.

A run folder is ``<runs>/<scenario>/<YYYYmmdd-HHMMSS>-seed<N>/`` and may contain
``scenario.yaml``, ``metrics.jsonl`` (one object per log point: ``global_step`` plus tags),
``metrics.json`` (the final evaluation summary), ``report.md`` and ``checkpoints/``. A folder that
is half written, corrupt or foreign is still listed: every problem becomes a :class:`Problem`
(a message key plus values) that the page translates, never an exception.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

logger = logging.getLogger("scenariolab.ui.runs")

RUNS_DIR_ENV = "SCENARIOLAB_RUNS_DIR"
RUN_NAME = re.compile(r"^(?P<stamp>\d{8}-\d{6})-seed(?P<seed>\d+)(?:-\d+)?$")


# Problems that describe a run still in progress or one without training, not damage: shown as notes.
NOTICE_KEYS = frozenset({"runs.problem.no_jsonl", "runs.problem.no_metrics"})


@dataclass(frozen=True)
class Problem:
    """Something wrong with a run folder: a message key of the UI catalogue and its values."""

    key: str
    values: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, key: str, **values: Any) -> "Problem":
        return cls(key, tuple((name, str(value)) for name, value in values.items()))

    def kwargs(self) -> dict[str, str]:
        return dict(self.values)

    @property
    def is_notice(self) -> bool:
        """Return True for an expected gap (a file not written yet) rather than a damaged file."""
        return self.key in NOTICE_KEYS


@dataclass
class RunFolder:
    """One run folder as found on disk: its identity and which standard files it has."""

    path: Path
    scenario: str
    name: str
    stamp: str | None
    seed: int | None
    has_metrics_json: bool
    has_jsonl: bool
    has_report: bool
    has_scenario: bool

    @property
    def label(self) -> str:
        """Return ``scenario/folder``, unique within one runs folder."""
        return f"{self.scenario}/{self.name}"


@dataclass
class Checkpoint:
    """One checkpoint pair ``<stem>.safetensors`` + ``<stem>.json`` in ``checkpoints/``."""

    stem: str
    global_step: int | None
    complete: bool
    metadata_readable: bool


@dataclass
class RunSummary:
    """The parsed content of ``metrics.json`` plus any problems met while reading it."""

    metrics: dict[str, float] = field(default_factory=dict)
    ci95: dict[str, tuple[float, float]] = field(default_factory=dict)
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)


def runs_dir() -> Path:
    """Return the runs folder the UI reads: ``$SCENARIOLAB_RUNS_DIR`` or ``./runs``."""
    configured = os.environ.get(RUNS_DIR_ENV)
    return Path(configured) if configured else Path.cwd() / "runs"


def folder_signature(path: Path) -> tuple[tuple[str, int, int], ...]:
    """Return (name, size, mtime_ns) of the standard files, so caches refresh when a run writes."""
    entries = []
    for name in ("metrics.json", "metrics.jsonl", "report.md", "scenario.yaml", "checkpoints"):
        try:
            stat = (path / name).stat()
        except OSError:
            continue
        entries.append((name, stat.st_size, stat.st_mtime_ns))
    return tuple(entries)


def _subfolders(folder: Path) -> list[Path]:
    """Return the visible subfolders of ``folder`` sorted by name; an unreadable folder has none."""
    try:
        children = sorted(folder.iterdir())
    except FileNotFoundError:
        return []
    except OSError as error:
        logger.warning("cannot list %s: %s", folder, error)
        return []
    return [child for child in children if child.is_dir() and not child.name.startswith(".")]


def list_run_folders(root: Path) -> list[RunFolder]:
    """Find ``<root>/<scenario>/<run>/`` folders, newest first; hidden folders (job logs) are skipped."""
    folders: list[RunFolder] = []
    for scenario_dir in _subfolders(root):
        for run_dir in _subfolders(scenario_dir):
            match = RUN_NAME.match(run_dir.name)
            folders.append(
                RunFolder(
                    path=run_dir,
                    scenario=scenario_dir.name,
                    name=run_dir.name,
                    stamp=match["stamp"] if match else None,
                    seed=int(match["seed"]) if match else None,
                    has_metrics_json=(run_dir / "metrics.json").is_file(),
                    has_jsonl=(run_dir / "metrics.jsonl").is_file(),
                    has_report=(run_dir / "report.md").is_file(),
                    has_scenario=(run_dir / "scenario.yaml").is_file(),
                )
            )
    # Folder names start with the time stamp, so sorting by name inside a scenario is by time.
    folders.sort(key=lambda folder: (folder.stamp or "", folder.scenario, folder.name), reverse=True)
    return folders


def _finite_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def read_learning_curves(path: Path) -> tuple[pd.DataFrame, list[Problem]]:
    """Read ``metrics.jsonl`` into long form (global_step, tag, value), skipping unreadable lines.

    A running or killed writer leaves a torn last line, so that line is skipped silently. Any
    other unreadable line is counted in one Problem.
    """
    jsonl = path / "metrics.jsonl"
    problems: list[Problem] = []
    rows: list[tuple[int, str, float]] = []
    try:
        text = jsonl.read_text(encoding="utf-8")
    except FileNotFoundError:
        return pd.DataFrame(columns=["global_step", "tag", "value"]), [Problem.of("runs.problem.no_jsonl")]
    except (OSError, UnicodeDecodeError) as error:
        return pd.DataFrame(columns=["global_step", "tag", "value"]), [Problem.of("runs.problem.jsonl_unreadable", error=error)]

    lines = text.split("\n")
    torn_last = not text.endswith("\n")
    bad_lines = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if not (torn_last and number == len(lines)):
                bad_lines += 1
            continue
        points = _record_points(record)
        if points is None:
            bad_lines += 1
            continue
        rows.extend(points)
    if bad_lines:
        problems.append(Problem.of("runs.problem.jsonl_bad_lines", count=bad_lines))
    frame = pd.DataFrame(rows, columns=["global_step", "tag", "value"])
    return frame, problems


def _record_points(record: Any) -> list[tuple[int, str, float]] | None:
    """Turn one log record into (global_step, tag, value) points; None when it has no global_step."""
    step = record.get("global_step") if isinstance(record, dict) else None
    if isinstance(step, bool) or not isinstance(step, (int, float)):
        return None
    points = []
    for tag, value in record.items():
        number = _finite_number(value)
        if tag != "global_step" and number is not None:
            points.append((int(step), str(tag), number))
    return points


class CurveTail:
    """Follows the metrics.jsonl files of running jobs, parsing only the bytes appended since the last read.

    Rereading a whole file on every poll would cost time in proportion to its length; this costs
    time in proportion to what was logged since. A file that shrank or was replaced (a resumed run
    truncates it) is read again from the start. Invalid lines are skipped here, and the Runs
    browser reports them when the run is selected.

    Limitation: a file truncated and then regrown past the last offset between two reads looks
    appended to, so old and new points mix. The Runs browser rereads whole files instead.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # path -> (inode, byte offset after the last complete line, points read so far)
        self._state: dict[str, tuple[int, int, list[tuple[int, str, float]]]] = {}

    def read(self, path: Path) -> pd.DataFrame:
        """Return every point of ``path`` (long form), reading only what was appended since the last call."""
        key = str(path)
        with self._lock:
            try:
                stat = path.stat()
            except OSError:
                self._state.pop(key, None)
                return pd.DataFrame(columns=["global_step", "tag", "value"])
            inode, offset, points = self._state.get(key, (stat.st_ino, 0, []))
            if inode != stat.st_ino or stat.st_size < offset:
                offset, points = 0, []
            if stat.st_size > offset:
                with open(path, "rb") as file:
                    file.seek(offset)
                    chunk = file.read(stat.st_size - offset)
                # Only complete lines are parsed; a torn last line waits for the rest of its bytes.
                complete = chunk[: chunk.rfind(b"\n") + 1]
                offset += len(complete)
                points = points + self._parse(complete)
            self._state[key] = (stat.st_ino, offset, points)
            return pd.DataFrame(points, columns=["global_step", "tag", "value"])

    @staticmethod
    def _parse(chunk: bytes) -> list[tuple[int, str, float]]:
        points: list[tuple[int, str, float]] = []
        for line in chunk.decode("utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line) if line.strip() else None
            except json.JSONDecodeError:
                continue
            points.extend(_record_points(record) or [])
        return points


def _flatten_numbers(mapping: Any, prefix: str = "") -> dict[str, float]:
    """Collect the finite numbers of a possibly nested mapping; nested names join with "/".

    A per-ranker section such as ``{"sasrec": {"ndcg@10": 0.31}}`` becomes ``sasrec/ndcg@10``.
    """
    numbers: dict[str, float] = {}
    if not isinstance(mapping, dict):
        return numbers
    for name, value in mapping.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            numbers.update(_flatten_numbers(value, f"{key}/"))
        elif (number := _finite_number(value)) is not None:
            numbers[key] = number
    return numbers


def _flatten_bounds(mapping: Any, prefix: str = "") -> dict[str, tuple[float, float]]:
    """Collect ``[low, high]`` pairs of a possibly nested mapping, named like :func:`_flatten_numbers`."""
    bounds: dict[str, tuple[float, float]] = {}
    if not isinstance(mapping, dict):
        return bounds
    for name, value in mapping.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            bounds.update(_flatten_bounds(value, f"{key}/"))
        elif isinstance(value, (list, tuple)) and len(value) == 2:
            low, high = _finite_number(value[0]), _finite_number(value[1])
            if low is not None and high is not None:
                bounds[key] = (low, high)
    return bounds


def read_summary(path: Path) -> RunSummary:
    """Read ``metrics.json``; a missing, corrupt or misshapen file becomes a Problem."""
    summary = RunSummary()
    metrics_path = path / "metrics.json"
    try:
        data = json.loads(metrics_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        summary.problems.append(Problem.of("runs.problem.no_metrics"))
        return summary
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        summary.problems.append(Problem.of("runs.problem.metrics_invalid", file=metrics_path, error=error))
        return summary
    if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
        summary.problems.append(Problem.of("runs.problem.metrics_shape", file=metrics_path))
        return summary

    summary.metrics = _flatten_numbers(data["metrics"])
    summary.ci95 = _flatten_bounds(data.get("ci95"))
    baselines = data.get("baselines") if isinstance(data.get("baselines"), dict) else {}
    for baseline, values in baselines.items():
        # A baseline is either {metric: value} or {"metrics": {...}, "ci95": {...}}.
        metrics = values.get("metrics", values) if isinstance(values, dict) else {}
        summary.baselines[str(baseline)] = _flatten_numbers(metrics)
    summary.info = {key: data[key] for key in ("scenario", "domain", "agent", "seed", "episodes") if key in data}
    return summary


def metrics_table(summary: RunSummary) -> pd.DataFrame:
    """Return one row per metric: value, 95% CI bounds, and one column per baseline."""
    rows = []
    for name, value in summary.metrics.items():
        low, high = summary.ci95.get(name, (math.nan, math.nan))
        row: dict[str, Any] = {"metric": name, "value": value, "ci95_low": low, "ci95_high": high}
        for baseline, numbers in summary.baselines.items():
            row[baseline] = numbers.get(name, math.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def format_with_ci(value: float, bounds: tuple[float, float] | None) -> str:
    """Format ``value [low, high]`` with four significant digits, or the value alone without a CI."""
    if bounds is None:
        return f"{value:.4g}"
    return f"{value:.4g} [{bounds[0]:.4g}, {bounds[1]:.4g}]"


def comparison_table(summaries: dict[str, RunSummary]) -> pd.DataFrame:
    """Return metrics side by side: one row per metric, one column per run, ``value [lo, hi]`` cells."""
    names: list[str] = []
    for summary in summaries.values():
        names.extend(name for name in summary.metrics if name not in names)
    columns: dict[str, list[str]] = {}
    for label, summary in summaries.items():
        columns[label] = [
            format_with_ci(summary.metrics[name], summary.ci95.get(name)) if name in summary.metrics else ""
            for name in names
        ]
    return pd.DataFrame(columns, index=pd.Index(names, name="metric"))


def list_checkpoints(path: Path) -> list[Checkpoint]:
    """List checkpoint pairs in ``checkpoints/`` with the ``global_step`` from their JSON metadata.

    Limitation: this reads the metadata only; the SHA-256 of the weights is checked when a
    checkpoint is loaded (shared.checkpoints.load_checkpoint), not here.
    """
    folder = path / "checkpoints"
    if not folder.is_dir():
        return []
    stems = sorted({file.stem for file in folder.iterdir() if file.suffix in (".json", ".safetensors") and not file.name.startswith(".")})
    found = []
    for stem in stems:
        json_path = folder / f"{stem}.json"
        complete = json_path.is_file() and (folder / f"{stem}.safetensors").is_file()
        step = None
        readable = False
        if json_path.is_file():
            try:
                metadata = json.loads(json_path.read_text(encoding="utf-8"))
                readable = isinstance(metadata, dict)
                raw_step = metadata.get("global_step") if readable else None
                step = int(raw_step) if isinstance(raw_step, (int, float)) and not isinstance(raw_step, bool) else None
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                readable = False
        found.append(Checkpoint(stem=stem, global_step=step, complete=complete, metadata_readable=readable))
    return found


IMAGE_LINK = re.compile(r"!\[(?P<alt>[^\]]*)\]\((?P<target>[^)\s]+)\)")


def split_report(text: str) -> list[tuple[str, str]]:
    """Split report Markdown into ("markdown", text) and ("image", relative path) parts, in order.

    Streamlit's Markdown cannot show images from the run folder, so the page draws them itself.
    """
    parts: list[tuple[str, str]] = []
    position = 0
    for match in IMAGE_LINK.finditer(text):
        if match.start() > position:
            parts.append(("markdown", text[position : match.start()]))
        parts.append(("image", match["target"]))
        position = match.end()
    if position < len(text):
        parts.append(("markdown", text[position:]))
    return parts


HEADING = re.compile(r"^(#{1,6})(\s)")
FENCE = re.compile(r"^\s*(```|~~~)")


def demote_headings(markdown: str, levels: int = 2) -> str:
    """Push Markdown headings down ``levels`` levels (at most h6), leaving fenced code alone.

    A report's ``# title`` would otherwise be as large as the page title around it.
    """
    lines = []
    in_fence = False
    for line in markdown.split("\n"):
        if FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence:
            line = HEADING.sub(lambda match: "#" * min(6, len(match[1]) + levels) + match[2], line)
        lines.append(line)
    return "\n".join(lines)


def resolve_inside(folder: Path, relative: str) -> Path | None:
    """Resolve a link from report.md, returning None when it points outside the run folder."""
    if "://" in relative:
        return None
    target = (folder / relative).resolve()
    try:
        target.relative_to(folder.resolve())
    except ValueError:
        return None
    return target
