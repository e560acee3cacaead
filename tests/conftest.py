"""Test configuration shared by every test folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# With the dummy video driver, pygame (highway-env's renderer) needs no display. apps/driving/rendering.py
# makes highway-env draw its rgb_array frames under this driver.
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")


@pytest.fixture
def repo_root() -> Path:
    return ROOT


@pytest.fixture
def one_torch_thread():
    """Run small-network code on one thread: on a shared CPU, extra threads only add synchronisation."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def scenariolab_command() -> list[str]:
    """The CLI as a subprocess command, run with this interpreter."""
    return [sys.executable, "-m", "shared.cli"]
