"""Registries that let apps plug scenario kinds and agents into the shared CLI, runner and UI.

``shared/`` never imports an app. Each app declares an entry point in the group
``scenariolab.apps`` whose target is a function ``register() -> None``; :func:`load_apps` calls
every one of them once. The app then names its kind modules with :func:`register_kind_module`,
and each of those calls :func:`register_kind` when it is first needed.
"""

from __future__ import annotations

import difflib
import logging
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from shared.errors import ScenarioError

if TYPE_CHECKING:
    from shared.kinds import ScenarioKind

logger = logging.getLogger("scenariolab.registry")

ENTRY_POINT_GROUP = "scenariolab.apps"

_KINDS: dict[str, "ScenarioKind"] = {}
_LAZY_MODULES: list[str] = []
_APPS_LOADED = False


def register_kind(kind: "ScenarioKind") -> None:
    """Add a scenario kind; a second registration under the same name replaces the first."""
    _KINDS[kind.name] = kind


def register_kind_module(module: str) -> None:
    """Name a module whose ``register()`` registers kinds; it is imported only when a kind is looked up.

    Apps use this so that ``scenariolab`` commands on classic-control scenarios never import
    highway-env, RecBole or transformers.
    """
    if module not in _LAZY_MODULES:
        _LAZY_MODULES.append(module)


def _import_lazy_modules(until: str | None = None) -> None:
    """Import pending kind modules, stopping early once ``until`` is registered."""
    import importlib

    while _LAZY_MODULES:
        if until is not None and until in _KINDS:
            return
        name = _LAZY_MODULES.pop(0)
        try:
            module = importlib.import_module(name)
        except ImportError as error:
            logger.warning("scenario kinds in %s could not be loaded: %s", name, error)
            continue
        register = getattr(module, "register", None)
        if register is not None:
            register()


def load_apps() -> None:
    """Import the built-in kinds and every installed app's ``register`` entry point, once."""
    global _APPS_LOADED
    if _APPS_LOADED:
        return
    _APPS_LOADED = True
    import shared.kinds  # noqa: F401  (registers the built-in "gym" kind)
    import shared.suite  # noqa: F401  (registers the built-in "suite" kind)

    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            register = entry_point.load()
        except ImportError as error:  # An app whose optional dependency is missing stays unavailable.
            logger.warning("app %s could not be loaded: %s", entry_point.name, error)
            continue
        register()


def get_kind(name: str, source: str | None = None) -> "ScenarioKind":
    """Return the registered kind called ``name`` or raise a ScenarioError that suggests the nearest one."""
    load_apps()
    if name not in _KINDS:
        _import_lazy_modules(until=name)
    if name in _KINDS:
        return _KINDS[name]
    raise ScenarioError(unknown_choice(source, "kind", name, sorted(_KINDS)))


def kinds() -> dict[str, "ScenarioKind"]:
    """Return all registered kinds by name, importing every app's kind modules."""
    load_apps()
    _import_lazy_modules()
    return dict(_KINDS)


def unknown_choice(source: str | None, field: str, value: Any, allowed: list[str]) -> str:
    """Build the one-line message for a value outside ``allowed``, with the closest match if any."""
    from shared.errors import located

    nearest = difflib.get_close_matches(str(value), allowed, n=1)
    hint = f" Did you mean {nearest[0]!r}?" if nearest else ""
    shown = ", ".join(allowed) if len(allowed) <= 12 else ", ".join(allowed[:12]) + ", ..."
    return located(source, field, f"unknown value {value!r}; allowed: {shown}.{hint}")
