"""Fixtures for the UI tests."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.ui import jobs


@pytest.fixture
def runs_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty runs folder that the UI reads through SCENARIOLAB_RUNS_DIR.

    Jobs started in it run in their own session, so a failed test could leave one behind; they
    are killed at teardown.
    """
    folder = tmp_path / "runs"
    folder.mkdir()
    monkeypatch.setenv("SCENARIOLAB_RUNS_DIR", str(folder))
    yield folder
    kill_leftover_jobs(folder)


def kill_leftover_jobs(runs_root: Path) -> None:
    """Send SIGKILL to the process group of every job in ``runs_root`` that still runs."""
    for job in jobs.read_jobs(runs_root):
        if jobs.is_alive(job):
            try:
                os.killpg(job.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
