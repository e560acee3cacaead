"""Test configuration shared by every test folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")


@pytest.fixture
def repo_root() -> Path:
    return ROOT


def scenariolab_command() -> list[str]:
    """The CLI as a subprocess command, run with this interpreter."""
    return [sys.executable, "-m", "shared.cli"]
