"""Home page: what ScenarioLab is, a link into each app page, and every scenario file with its agent.

Streamlit runs this file as a page script (``__name__ == "__main__"``); importing it draws nothing.
Home is usually the first page of a browser session, so it imports no app and no pandas before its
title is drawn. Full validation of the scenario files (which imports every app's envs) runs only
when the reader asks for it.
"""

from __future__ import annotations

import streamlit as st

from shared.ui.components import scenario_entries, scenario_validation_errors
from shared.ui.i18n import t

VALIDATED_STATE_KEY = "home_validated"

# (page file relative to streamlit_app.py, title key, blurb key, icon); the router registers the same files.
APP_LINKS: tuple[tuple[str, str, str, str], ...] = (
    ("apps/game_ai/ui.py", "nav.game_ai", "home.blurb.game_ai", ":material/sports_esports:"),
    ("apps/driving/ui.py", "nav.driving", "home.blurb.driving", ":material/directions_car:"),
    ("apps/recommendation/ui.py", "nav.recommendation", "home.blurb.recommendation", ":material/shopping_cart:"),
    ("shared/ui/runs.py", "nav.runs", "home.blurb.runs", ":material/monitoring:"),
)


def render_links() -> None:
    """Draw one card per area with a page link and a one-line description."""
    columns = st.columns(len(APP_LINKS))
    for column, (page, title_key, blurb_key, icon) in zip(columns, APP_LINKS):
        with column.container(border=True):
            st.page_link(page, label=t(title_key), icon=icon)
            st.caption(t(blurb_key))


def render_scenarios() -> None:
    """Draw the table of scenario files and one error line per file that does not read."""
    import pandas as pd

    st.subheader(t("home.scenarios.title"))
    entries = scenario_entries()
    if not entries:
        st.info(t("home.scenarios.none"))
        return

    loaded = [entry for entry in entries if entry.error is None]
    broken = [entry for entry in entries if entry.error is not None]
    if loaded:
        table = pd.DataFrame(
            {
                t("home.col.name"): [entry.stem for entry in loaded],
                t("home.col.domain"): [t(f"domain.{entry.domain}") for entry in loaded],
                t("home.col.agent"): [entry.agent or "—" for entry in loaded],
                t("home.col.kind"): [entry.kind for entry in loaded],
                t("home.col.description"): [entry.description for entry in loaded],
            }
        )
        # Tall enough for every row (35 px each plus the header), so the list needs no inner scrolling.
        st.dataframe(table, hide_index=True, width="stretch", height=35 * (len(loaded) + 1) + 3)
        st.caption(t("home.scenarios.count", count=len(loaded)))
    if broken:
        st.markdown(f"**{t('home.scenarios.broken', count=len(broken))}**")
        for entry in broken:
            st.error(entry.error, icon=":material/warning:")
    render_full_validation([entry.path for entry in loaded])


def render_full_validation(listed: list[str]) -> None:
    """Offer full validation of the files in the table and, once asked, show its result on every rerun.

    Files that do not read are left out, because their error line is already on the page.
    """
    if st.button(t("home.validate.button"), key="home_validate", icon=":material/fact_check:", help=t("home.validate.help")):
        st.session_state[VALIDATED_STATE_KEY] = True
    if not st.session_state.get(VALIDATED_STATE_KEY):
        return
    with st.spinner(t("home.validate.running")):
        all_errors = scenario_validation_errors()
    errors = {path: error for path, error in all_errors.items() if path in listed}
    if not errors:
        st.success(t("home.validate.all_valid", count=len(listed)), icon=":material/check_circle:")
        return
    st.markdown(f"**{t('home.validate.invalid', count=len(errors), total=len(listed))}**")
    for error in errors.values():
        st.error(error, icon=":material/warning:")


def render() -> None:
    """Draw the Home page."""
    st.title(t("home.title"))
    st.markdown(t("home.intro"))
    render_links()
    render_scenarios()
    st.subheader(t("home.cli.title"))
    st.markdown(t("home.cli.text"))
    st.code("scenariolab list\nscenariolab run cartpole_ppo --budget smoke\nscenariolab demo", language="bash")


if __name__ == "__main__":
    render()
