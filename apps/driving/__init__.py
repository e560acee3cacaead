"""ScenarioLab app: driving. `register()` is its entry point in the group `scenariolab.apps`."""

from __future__ import annotations

import logging

from shared.registry import register_kind_module

logger = logging.getLogger("scenariolab.apps.driving")

# Modules that each define register(); they are imported only when one of their kinds is looked up.
KIND_MODULES: tuple[str, ...] = ("envs", "robustness")


def register() -> None:
    """Register this app's scenario kinds with the shared registry."""
    for name in KIND_MODULES:
        register_kind_module(f"apps.driving.{name}")
