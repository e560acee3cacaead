"""ScenarioLab app: recommendation. `register()` is its entry point in the group `scenariolab.apps`."""

from __future__ import annotations

import importlib
import logging

logger = logging.getLogger("scenariolab.apps.recommendation")

# Modules that each define register(); one that fails to import is logged and skipped.
KIND_MODULES: tuple[str, ...] = ()


def register() -> None:
    """Register this app's scenario kinds with the shared registry."""
    for name in KIND_MODULES:
        module = importlib.import_module(f"apps.recommendation.{name}")
        module.register()
