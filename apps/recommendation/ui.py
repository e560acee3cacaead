"""Streamlit page of the recommendation app: a user's history, base vs RL re-ranked top 10, a simulated session.

Streamlit runs this file as a page script each time the page is open (see streamlit_app.py).
The dataset, embeddings and shipped artefacts load once through ``st.cache_resource``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from shared.ui.i18n import t

logger = logging.getLogger("scenariolab.ui.recommendation")

SCENARIO_NAME = "movielens_rl_rerank"
# Rankers without learned weights; the shipped RL re-rankers come first in the session's list.
FIXED_RANKERS = ("base", "text_similarity", "random")


@st.cache_resource(show_spinner=False)
def users() -> list[str]:
    """Return the user ids with a training history and a test item. The first call loads the shipped pipeline."""
    from apps.recommendation.demo import list_users

    return list_users()


@st.cache_resource(show_spinner=False)
def rankers() -> list[str]:
    """Return the ranker names a DemoSession accepts: each shipped RL re-ranker, then the fixed rankers."""
    from apps.recommendation.pipeline import shipped_state

    return [*shipped_state().policies, *FIXED_RANKERS]


@st.cache_data(show_spinner=False)
def history(user: str) -> list[dict[str, Any]]:
    from apps.recommendation.demo import user_history

    return user_history(user, 10)


@st.cache_data(show_spinner=False)
def top_lists(user: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Return the base model's and the RL re-ranker's top 10 for ``user``."""
    from apps.recommendation.demo import base_top, rl_top

    return base_top(user, 10), rl_top(user, 10)


def change_label(item: str, rank: int, base_ranks: dict[str, int]) -> str:
    """Describe how an item of the RL list moved against the base list: up, down, same place or new."""
    if item not in base_ranks:
        return t("recommendation.change.new")
    shift = base_ranks[item] - rank
    if shift > 0:
        return t("recommendation.change.up", count=shift)
    if shift < 0:
        return t("recommendation.change.down", count=-shift)
    return t("recommendation.change.same")


def top_tables(base: list[dict[str, Any]], rl: list[dict[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Build the base and RL top-10 tables. The RL table has a column with each item's change."""
    base_ranks = {row["item_id"]: rank for rank, row in enumerate(base, start=1)}
    rl_ids = {row["item_id"] for row in rl}
    base_table = pd.DataFrame(
        {
            "#": range(1, len(base) + 1),
            t("recommendation.col.title"): [row["title"] for row in base],
            t("recommendation.col.score"): [round(row["score"], 3) for row in base],
            t("recommendation.col.kept"): ["✓" if row["item_id"] in rl_ids else t("recommendation.change.dropped") for row in base],
        }
    )
    rl_table = pd.DataFrame(
        {
            "#": range(1, len(rl) + 1),
            t("recommendation.col.title"): [row["title"] for row in rl],
            t("recommendation.col.score"): [round(row["score"], 3) for row in rl],
            t("recommendation.col.change"): [change_label(row["item_id"], rank, base_ranks) for rank, row in enumerate(rl, start=1)],
        }
    )
    return base_table, rl_table


def render_session(user: str) -> None:
    """Draw a simulated session under the chosen ranker, advanced by one slate per click of "next step"."""
    from apps.recommendation.demo import DemoSession

    st.subheader(t("recommendation.session.title"))
    left, right = st.columns(2)
    ranker = left.selectbox(t("recommendation.session.ranker"), rankers(), key="rec_ranker")
    seed = int(right.number_input(t("recommendation.seed"), min_value=0, max_value=100_000, value=0, step=1, key="rec_seed"))
    session_key = (user, ranker, seed)
    if st.session_state.get("rec_session_key") != session_key:
        st.session_state["rec_session"] = DemoSession(user, ranker=ranker, seed=seed)
        st.session_state["rec_session_key"] = session_key
    session = st.session_state["rec_session"]

    first, second = st.columns(2)
    if first.button(t("recommendation.session.next"), type="primary", key="rec_next", disabled=session.done, icon=":material/skip_next:"):
        session.step()
        st.rerun()
    if second.button(t("recommendation.session.restart"), key="rec_restart", icon=":material/restart_alt:"):
        st.session_state["rec_session"] = DemoSession(user, ranker=ranker, seed=seed)
        st.rerun()
    if not session.steps:
        st.info(t("recommendation.session.empty"), icon=":material/info:")
        return
    total = sum(record["reward"] for record in session.steps)
    st.caption(t("recommendation.session.total", steps=len(session.steps), reward=total))
    record = session.steps[-1]
    st.markdown(f"**{t('recommendation.session.step', step=record['step'], reward=record['reward'], clicks=sum(i['clicked'] for i in record['slate']))}**")
    slate = pd.DataFrame(
        {
            "#": range(1, len(record["slate"]) + 1),
            t("recommendation.col.title"): [item["title"] for item in record["slate"]],
            t("recommendation.col.clicked"): ["✓" if item["clicked"] else "" for item in record["slate"]],
        }
    )
    st.dataframe(slate, hide_index=True, width="stretch")
    if record["ended"]:
        st.warning(t("recommendation.session.left" if record["left"] else "recommendation.session.ended"), icon=":material/logout:")


@st.cache_data(show_spinner=False)
def latest_comparison(root: str, signature: tuple[Any, ...]) -> dict[str, Any] | None:
    """Return the newest run of the recommendation scenario with a readable metrics.json, as a metrics table."""
    from shared.ui.rundata import list_run_folders, metrics_table, read_summary

    for folder in list_run_folders(Path(root)):
        if folder.scenario == SCENARIO_NAME and folder.has_metrics_json:
            summary = read_summary(folder.path)
            if not summary.problems:
                return {"folder": str(folder.path), "table": metrics_table(summary), "agent": summary.info.get("agent", "")}
    return None


def render_comparison() -> None:
    """Draw the offline (NDCG, recall, ...) and online (simulator) metrics of the newest run."""
    from shared.ui.rundata import folder_signature, list_run_folders, runs_dir

    st.subheader(t("recommendation.compare.title"))
    root = runs_dir()
    signature = tuple((str(f.path), folder_signature(f.path)) for f in list_run_folders(root))
    latest = latest_comparison(str(root), signature)
    if latest is None:
        st.info(t("recommendation.compare.none", scenario=SCENARIO_NAME), icon=":material/info:")
        return
    st.caption(t("recommendation.compare.from_run", folder=latest["folder"], agent=latest["agent"]))
    st.dataframe(latest["table"], hide_index=True, width="stretch")


def render() -> None:
    """Draw the page: user picker, history, the two top-10 lists, the session and the comparison."""
    st.title(t("nav.recommendation"))
    st.markdown(t("recommendation.intro"))
    try:
        with st.spinner(t("recommendation.loading")):
            user_ids = users()
    except Exception as error:  # noqa: BLE001  (missing artefacts become a message, never a traceback)
        logger.exception("loading the shipped recommendation artefacts failed")
        st.error(t("recommendation.load_failed", error=f"{type(error).__name__}: {error}"), icon=":material/error:")
        return
    if not user_ids:
        st.warning(t("recommendation.no_users"), icon=":material/warning:")
        return
    user = st.selectbox(t("recommendation.user"), user_ids, key="rec_user")

    st.subheader(t("recommendation.history.title"))
    items = history(user)
    st.dataframe(
        pd.DataFrame({t("recommendation.col.title"): [row["title"] for row in items], t("recommendation.col.details"): [row["text"] for row in items]}),
        hide_index=True,
        width="stretch",
    )

    try:
        base, rl = top_lists(user)
    except Exception as error:  # noqa: BLE001  (a failed re-ranking becomes a message, never a traceback)
        logger.exception("top-10 lists for user %s failed", user)
        st.error(t("recommendation.rerank_failed", error=f"{type(error).__name__}: {error}"), icon=":material/error:")
    else:
        base_table, rl_table = top_tables(base, rl)
        left, right = st.columns(2)
        left.subheader(t("recommendation.base.title"))
        left.dataframe(base_table, hide_index=True, width="stretch")
        right.subheader(t("recommendation.rl.title"))
        right.dataframe(rl_table, hide_index=True, width="stretch")

    render_session(user)
    render_comparison()


if __name__ == "__main__":
    render()
