"""Training logs: one JSON object per log point in ``metrics.jsonl`` and TensorBoard events in ``tb/``.

Tags follow CleanRL and Stable-Baselines3 (``charts/episodic_return``, ``losses/value_loss``,
``safety/episodic_cost``, ``eval/<metric>``), always against ``global_step`` counted in environment
steps across all envs.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

logger = logging.getLogger("scenariolab")


class MetricLogger:
    """Write scalar metrics to JSONL (always) and TensorBoard (when enabled) under a run folder."""

    def __init__(self, run_path: Path | str, tensorboard: bool = True, resume_step: int | None = None):
        self.run_path = Path(run_path)
        self.jsonl_path = self.run_path / "metrics.jsonl"
        if resume_step is not None:
            truncate_jsonl(self.jsonl_path, resume_step)
        self._file = open(self.jsonl_path, "a" if resume_step is not None else "w", encoding="utf-8")
        self._writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step hides events a resumed run logs again after its checkpoint.
            self._writer = SummaryWriter(log_dir=str(self.run_path / "tb"), purge_step=resume_step)

    def log(self, global_step: int, values: dict[str, Any]) -> None:
        """Append one record ``{"global_step": N, tag: value, ...}``; non-finite values are written as null."""
        record: dict[str, Any] = {"global_step": int(global_step)}
        for tag, value in values.items():
            number = float(value)
            record[tag] = number if math.isfinite(number) else None
            if self._writer is not None and math.isfinite(number):
                self._writer.add_scalar(tag, number, int(global_step))
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()
        if self._writer is not None:
            self._writer.close()

    def __enter__(self) -> "MetricLogger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_jsonl(path: Path | str) -> list[dict[str, Any]]:
    """Read a metrics.jsonl file, skipping a torn last line left by a killed process."""
    records = []
    with open(path, encoding="utf-8") as file:
        for line in file:
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def truncate_jsonl(path: Path, max_global_step: int) -> None:
    """Drop records logged after ``max_global_step``, so a resumed run does not log a step twice."""
    if not path.exists():
        return
    kept = [r for r in read_jsonl(path) if r.get("global_step", 0) <= max_global_step]
    path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
