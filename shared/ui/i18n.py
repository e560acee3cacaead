"""Message catalogues for the Streamlit UI: English and Simplified Chinese, with an English fallback.

Every label, message and page title in the UI goes through :func:`t`. Keys are flat, dotted
strings (``runs.title``); values are :meth:`str.format` templates (``"{count} runs"``).

Where the entries live:

* ``shared/ui/locales/<language>.json``: the router's, Home's and Runs' entries.
* ``apps/<app>/locales/<language>.json``: an app page's own entries. Each key must start with
  ``<app>.`` (``game_ai.title``), so apps never overwrite each other or the shared entries. A key
  outside that prefix is skipped and logged. The files are found by their location, so an app
  page gets its entries without registering anything and without the UI importing the app.
* :func:`register_catalogue` adds entries from code, for a catalogue that is not a file.

A key missing from a language falls back to English. A key missing from English as well is
returned as the key itself, logged, and recorded in :func:`missing_keys` so tests can fail on it.
Field names (NDCG, TTC, PPO) are written as the field writes them in every language.
"""

from __future__ import annotations

import json
import logging
import string
import threading
from pathlib import Path
from typing import Any

logger = logging.getLogger("scenariolab.ui.i18n")

LANGUAGES: dict[str, str] = {"en": "English", "zh-CN": "简体中文"}
DEFAULT_LANGUAGE = "en"
LANGUAGE_STATE_KEY = "language"

SHARED_LOCALES = Path(__file__).resolve().parent / "locales"
APPS_ROOT = Path(__file__).resolve().parents[2] / "apps"

_lock = threading.Lock()
_catalogues: dict[str, dict[str, str]] | None = None
_registered: dict[str, dict[str, str]] = {language: {} for language in LANGUAGES}
_missing: set[str] = set()


def _read_catalogue_file(path: Path) -> dict[str, str]:
    """Read one JSON catalogue: a flat mapping of key to template string."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ValueError(f"{path}: expected a flat JSON object of string keys to string templates")
    return data


def app_catalogue_files(language: str) -> list[Path]:
    """Return the ``apps/<app>/locales/<language>.json`` files that exist, sorted by app."""
    if not APPS_ROOT.is_dir():
        return []
    return sorted(APPS_ROOT.glob(f"*/locales/{language}.json"))


def _load_all() -> dict[str, dict[str, str]]:
    """Read the shared and app catalogues of every language into one mapping per language."""
    catalogues: dict[str, dict[str, str]] = {}
    for language in LANGUAGES:
        merged: dict[str, str] = {}
        shared_file = SHARED_LOCALES / f"{language}.json"
        if shared_file.exists():
            merged.update(_read_catalogue_file(shared_file))
        for path in app_catalogue_files(language):
            app = path.parent.parent.name
            try:
                entries = _read_catalogue_file(path)
            except (OSError, ValueError) as error:
                logger.error("skipping app catalogue %s: %s", path, error)
                continue
            for key, value in entries.items():
                if key.startswith(f"{app}."):
                    merged[key] = value
                else:
                    logger.warning("%s: key %r skipped because app keys must start with %r", path, key, f"{app}.")
        merged.update(_registered[language])
        catalogues[language] = merged
    return catalogues


def catalogues() -> dict[str, dict[str, str]]:
    """Return the merged catalogue of every language, reading the files on first use."""
    global _catalogues
    with _lock:
        if _catalogues is None:
            _catalogues = _load_all()
        return _catalogues


def reload_catalogues() -> None:
    """Forget the cached catalogues so the next lookup rereads the files (after editing them)."""
    global _catalogues
    with _lock:
        _catalogues = None


def register_catalogue(language: str, entries: dict[str, str]) -> None:
    """Add or replace entries of one language from code; they take precedence over the files."""
    if language not in LANGUAGES:
        raise ValueError(f"unknown language {language!r}; allowed: {', '.join(LANGUAGES)}")
    _registered[language].update(entries)
    reload_catalogues()


def missing_keys() -> set[str]:
    """Return the keys looked up so far that English does not define."""
    return set(_missing)


def current_language() -> str:
    """Return the language chosen in the sidebar, or English outside a Streamlit session."""
    try:
        import streamlit as st

        language = st.session_state.get(LANGUAGE_STATE_KEY, DEFAULT_LANGUAGE)
    except Exception:  # noqa: BLE001  (no script run context: plain Python, a unit test)
        return DEFAULT_LANGUAGE
    return language if language in LANGUAGES else DEFAULT_LANGUAGE


def translate(key: str, language: str, **kwargs: Any) -> str:
    """Look ``key`` up in ``language``, falling back to English, and fill in ``kwargs``."""
    all_catalogues = catalogues()
    template = all_catalogues.get(language, {}).get(key)
    if template is None:
        template = all_catalogues[DEFAULT_LANGUAGE].get(key)
    if template is None:
        if key not in _missing:
            logger.warning("message key %r is missing from the English catalogue", key)
        _missing.add(key)
        return key
    if not kwargs:
        return template
    try:
        return template.format(**kwargs)
    except (KeyError, IndexError, ValueError) as error:
        logger.warning("message %r in %s could not be formatted: %s", key, language, error)
        return template


def t(key: str, **kwargs: Any) -> str:
    """Translate ``key`` into the language chosen in the sidebar; ``kwargs`` fill the template."""
    return translate(key, current_language(), **kwargs)


def placeholders(template: str) -> set[str]:
    """Return the names of the ``{field}`` placeholders in a template."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def language_selector() -> str:
    """Draw the language switch in the sidebar and return the chosen language code."""
    import streamlit as st

    if st.session_state.get(LANGUAGE_STATE_KEY) not in LANGUAGES:
        st.session_state[LANGUAGE_STATE_KEY] = DEFAULT_LANGUAGE
    # The label is written in both languages so that a reader of either can find the switch.
    st.sidebar.selectbox(
        translate("sidebar.language", DEFAULT_LANGUAGE) + " / " + translate("sidebar.language", "zh-CN"),
        options=list(LANGUAGES),
        format_func=LANGUAGES.__getitem__,
        key=LANGUAGE_STATE_KEY,
    )
    return current_language()
