"""ScenarioLab's Streamlit demo: the entry point and router, one page per area.

Start it with ``streamlit run streamlit_app.py`` (or ``scenariolab demo``). The language switch in
the sidebar sets every label through :func:`shared.ui.i18n.t`.

An app page is the Streamlit page script ``apps/<app>/ui.py``. Streamlit runs it top to bottom
(with ``__name__ == "__main__"``) only while that page is open, so an app's heavy imports never slow
the other pages. An exception in it becomes a translated error message on that page, and the other
pages keep working. Its labels use ``t("<app>.<key>")`` with entries in
``apps/<app>/locales/en.json`` and ``zh-CN.json``. It loads models and data through
``st.cache_resource`` or ``st.cache_data``, so a rerun does not repeat the work.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from shared.ui.components import run_page_safely
from shared.ui.i18n import language_selector, t

ROOT = Path(__file__).resolve().parent

# (page file relative to this file, title key, icon, URL path). Every file page needs its own URL
# path because the three app pages share the file name ui.py.
PAGES: tuple[tuple[str, str, str, str], ...] = (
    ("shared/ui/home.py", "nav.home", ":material/home:", "home"),
    ("apps/game_ai/ui.py", "nav.game_ai", ":material/sports_esports:", "game-ai"),
    ("apps/driving/ui.py", "nav.driving", ":material/directions_car:", "driving"),
    ("apps/recommendation/ui.py", "nav.recommendation", ":material/shopping_cart:", "recommendation"),
    ("shared/ui/runs.py", "nav.runs", ":material/monitoring:", "runs"),
)


def missing_page(title_key: str, file: str):
    """Return a page function that reports a missing page file instead of failing the router."""

    def show() -> None:
        st.title(t(title_key))
        st.error(t("app.page_missing", file=file), icon=":material/error:")

    return show


def build_pages() -> list[st.Page]:
    """Create one translated st.Page per area; the Home page is the default."""
    pages = []
    for index, (file, title_key, icon, url_path) in enumerate(PAGES):
        target = file if (ROOT / file).is_file() else missing_page(title_key, file)
        pages.append(st.Page(target, title=t(title_key), icon=icon, url_path=url_path, default=index == 0))
    return pages


st.set_page_config(page_title="ScenarioLab", page_icon=":material/science:", layout="wide")
language_selector()
run_page_safely(st.navigation(build_pages()))
