"""ScenarioLab app: recommendation. `register()` is its entry point in the group `scenariolab.apps`."""

from __future__ import annotations

import logging

from shared.registry import register_kind_module

logger = logging.getLogger("scenariolab.apps.recommendation")

# Modules that each define register(); they are imported only when one of their kinds is looked up.
KIND_MODULES: tuple[str, ...] = ("kind",)


def register() -> None:
    """Register this app's scenario kinds with the shared registry."""
    for name in KIND_MODULES:
        register_kind_module(f"apps.recommendation.{name}")
