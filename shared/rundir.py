"""The run folder: ``runs/<scenario>/<YYYYmmdd-HHMMSS>-seed<N>/`` and its ``metrics.json``."""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.errors import OutputError

if TYPE_CHECKING:
    from shared.scenario import LoadedScenario


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it, so a crash leaves the old file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(temporary, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the usual mode
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _json_safe(value: Any) -> Any:
    """Replace NaN and infinities (not valid JSON) with None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _json_safe(value.item())
    return value


def atomic_write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON atomically; NaN becomes null."""
    text = json.dumps(_json_safe(data), indent=2, ensure_ascii=False, allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode("utf-8"))


def check_writable(folder: Path, field: str = "--out") -> None:
    """Create ``folder`` if needed and check it accepts files; raise OutputError otherwise."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-", delete=True)
        probe.close()
    except OSError as error:
        raise OutputError(f"{folder}: {field}: output folder is not writable ({error.strerror or error})") from None


class RunDir:
    """One run's folder, with the standard file names as attributes."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @classmethod
    def create(cls, out_root: Path | str, scenario_name: str, seed: int, stamp: str | None = None) -> "RunDir":
        """Create ``out_root/<scenario>/<stamp>-seed<seed>``; a clash with an existing folder gets a suffix."""
        root = Path(out_root)
        check_writable(root)
        stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
        base = root / scenario_name / f"{stamp}-seed{seed}"
        path = base
        counter = 1
        while path.exists():
            path = base.with_name(f"{base.name}-{counter}")
            counter += 1
        try:
            path.mkdir(parents=True)
        except OSError as error:
            raise OutputError(f"{path}: --out: cannot create the run folder ({error.strerror or error})") from None
        return cls(path)

    @property
    def checkpoints(self) -> Path:
        folder = self.path / "checkpoints"
        folder.mkdir(exist_ok=True)
        return folder

    @property
    def videos(self) -> Path:
        folder = self.path / "videos"
        folder.mkdir(exist_ok=True)
        return folder

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.json"

    @property
    def jsonl_path(self) -> Path:
        return self.path / "metrics.jsonl"

    def write_scenario(self, loaded: "LoadedScenario") -> None:
        """Save the resolved scenario (overrides applied) as ``scenario.yaml``."""
        atomic_write_bytes(self.path / "scenario.yaml", loaded.to_yaml().encode("utf-8"))

    def write_json(self, name: str, data: Any) -> Path:
        path = self.path / name
        atomic_write_json(path, data)
        return path

    def write_metrics(self, summary: dict[str, Any]) -> Path:
        """Write ``metrics.json`` atomically."""
        return self.write_json("metrics.json", summary)

    def read_metrics(self) -> dict[str, Any]:
        return json.loads(self.metrics_path.read_text(encoding="utf-8"))


def metrics_summary(
    loaded: "LoadedScenario",
    agent: str,
    seed: int,
    episodes: int,
    metrics: dict[str, float],
    ci95: dict[str, list[float]],
    baselines: dict[str, dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the metrics.json mapping: scenario, domain, agent, seed, episodes, metrics, ci95, baselines."""
    summary: dict[str, Any] = {
        "scenario": loaded.scenario.name,
        "domain": loaded.scenario.domain,
        "agent": agent,
        "seed": seed,
        "episodes": episodes,
        "metrics": metrics,
        "ci95": ci95,
        "baselines": baselines or {},
    }
    if extra:
        summary.update(extra)
    return summary
