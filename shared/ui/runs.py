"""Runs page: browse run folders, compare learning curves and metrics, read reports, start and stop jobs.

The page reads ``$SCENARIOLAB_RUNS_DIR`` (default ``./runs``). File contents are cached by file size
and modification time, so a rerun only rereads what a running job has changed. Streamlit runs this
file as a page script (``__name__ == "__main__"``); importing it draws nothing.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import streamlit as st

from shared.ui import jobs as jobs_module
from shared.ui import rundata
from shared.ui.components import learning_curve_chart, scenario_entries, show_problems
from shared.ui.i18n import t

DEFAULT_TAG = "charts/episodic_return"
POLL_SECONDS = 2.0


@st.cache_data(show_spinner=False, max_entries=256)
def cached_curves(path: str, signature: tuple) -> tuple[pd.DataFrame, list[rundata.Problem]]:
    """Read a run's learning curves once per version of its files (``signature``)."""
    return rundata.read_learning_curves(Path(path))


@st.cache_data(show_spinner=False, max_entries=256)
def cached_summary(path: str, signature: tuple) -> rundata.RunSummary:
    """Read a run's metrics.json once per version of its files (``signature``)."""
    return rundata.read_summary(Path(path))


@st.cache_resource(show_spinner=False)
def curve_tail() -> rundata.CurveTail:
    """Return the one reader, shared by every session, that follows running jobs' metrics.jsonl."""
    return rundata.CurveTail()


def load_curves(folder: Path) -> tuple[pd.DataFrame, list[rundata.Problem]]:
    return cached_curves(str(folder), rundata.folder_signature(folder))


def load_summary(folder: Path) -> rundata.RunSummary:
    return cached_summary(str(folder), rundata.folder_signature(folder))


# ---------------------------------------------------------------------------------------------
# Starting and watching jobs


def cli_available() -> bool:
    """Return True when ``shared.cli`` can be imported by a job's interpreter."""
    return importlib.util.find_spec("shared.cli") is not None


def render_start_form(runs_root: Path) -> None:
    """Draw the form that starts ``scenariolab run`` for a chosen scenario in a subprocess."""
    with st.expander(t("runs.start.title"), expanded=False):
        if not cli_available():
            st.warning(t("runs.start.no_cli"), icon=":material/warning:")
            return
        entries = [entry for entry in scenario_entries() if entry.error is None]
        if not entries:
            st.info(t("runs.start.no_scenarios"))
            return
        by_path = {entry.path: entry for entry in entries}
        with st.form("start_run", border=False):
            chosen = st.selectbox(
                t("runs.start.scenario"),
                options=list(by_path),
                # The option text must not depend on the language: Streamlit matches a kept
                # selection by its text, so a translated text would reset it on a language switch.
                format_func=lambda path: f"{by_path[path].stem} ({by_path[path].domain}, {by_path[path].agent or '—'})",
                key="start_scenario",
            )
            budget = st.selectbox(t("runs.start.budget"), options=list(by_path[chosen].budgets), key="start_budget", help=t("runs.start.budget_help"))
            seed = st.number_input(t("runs.start.seed"), min_value=0, max_value=2**31 - 1, value=0, step=1, key="start_seed")
            submitted = st.form_submit_button(t("runs.start.submit"), type="primary")
        if submitted:
            entry = by_path[chosen]
            command = jobs_module.cli_run_command(entry.path, budget, int(seed), runs_root)
            try:
                job = jobs_module.start_job(runs_root, command, scenario=entry.path, scenario_name=entry.name, budget=budget, seed=int(seed), cwd=Path.cwd())
            except OSError as error:
                st.error(t("runs.start.failed", error=error), icon=":material/error:")
            else:
                st.success(t("runs.start.started", name=entry.stem, pid=job.pid))


def render_job(runs_root: Path, job: jobs_module.Job) -> None:
    """Draw one job: status, stop button while it runs, latest logged step, and the end message."""
    state = jobs_module.status(job)
    run_folder = jobs_module.find_run_folder(runs_root, job)
    with st.container(border=True):
        header, button = st.columns([5, 1])
        header.markdown(
            f"**{Path(job.scenario).stem}** · {t('runs.start.budget')}: `{job.budget}` · {t('runs.start.seed')}: {job.seed} · "
            f"pid {job.pid} · {t('jobs.status.' + state)}"
        )
        if state == "running" and button.button(t("jobs.stop"), key=f"stop_{job.id}"):
            if jobs_module.stop_job(runs_root, job.id):
                job.stop_requested = True
                st.info(t("jobs.stop_sent"))
            state = jobs_module.status(job)

        if run_folder is not None:
            curves = curve_tail().read(run_folder / "metrics.jsonl")
            if not curves.empty:
                latest = int(curves["global_step"].max())
                st.caption(t("jobs.progress", step=latest, folder=f"{run_folder.parent.name}/{run_folder.name}"))
                if state in ("running", "stopping") and DEFAULT_TAG in set(curves["tag"]):
                    st.altair_chart(learning_curve_chart(curves, DEFAULT_TAG).properties(height=180), width="stretch")
        elif state in ("running", "stopping"):
            st.caption(t("jobs.waiting"))

        if state == "stopped":
            checkpoints = rundata.list_checkpoints(run_folder) if run_folder else []
            if any(checkpoint.complete for checkpoint in checkpoints):
                st.info(t("jobs.stopped_with_checkpoint", checkpoints=", ".join(c.stem for c in checkpoints if c.complete)))
            else:
                st.warning(t("jobs.stopped_without_checkpoint"), icon=":material/warning:")
        elif state == "failed":
            st.error(t("jobs.failed", code=job.returncode), icon=":material/error:")
            tail = jobs_module.log_tail(job)
            if tail:
                st.code(tail, language=None)
        elif state == "lost":
            st.info(t("jobs.lost"))
        elif state == "finished":
            st.success(t("jobs.finished"))


def render_jobs(runs_root: Path) -> None:
    """Draw the job list; while a job runs, this part reruns on its own every few seconds."""
    if not (runs_root / jobs_module.JOBS_FOLDER).exists():
        return
    try:
        jobs = jobs_module.refresh(runs_root)
    except OSError as error:
        st.warning(t("jobs.registry_failed", error=error), icon=":material/warning:")
        return
    if not jobs:
        return
    running = any(jobs_module.status(job) in ("running", "stopping") for job in jobs)

    @st.fragment(run_every=POLL_SECONDS if running else None)
    def job_panel() -> None:
        try:
            current = jobs_module.refresh(runs_root)
        except OSError as error:
            st.warning(t("jobs.registry_failed", error=error), icon=":material/warning:")
            return
        still_running = {job.id for job in current if jobs_module.status(job) in ("running", "stopping")}
        previously = st.session_state.get("running_jobs", set())
        st.session_state["running_jobs"] = still_running
        st.subheader(t("jobs.title"))
        for job in current[:10]:
            render_job(runs_root, job)
        if previously - still_running:
            # A job just ended: rerun the whole page so the run list shows its final files.
            st.rerun(scope="app")

    job_panel()


# ---------------------------------------------------------------------------------------------
# Browsing run folders


def render_overview(folders: list[rundata.RunFolder]) -> None:
    """Draw one row per run folder with the files it has."""
    yes, no = "✓", "—"
    table = pd.DataFrame(
        {
            t("runs.col.run"): [folder.label for folder in folders],
            t("runs.col.seed"): [str(folder.seed) if folder.seed is not None else no for folder in folders],
            t("runs.col.metrics"): [yes if folder.has_metrics_json else no for folder in folders],
            t("runs.col.curves"): [yes if folder.has_jsonl else no for folder in folders],
            t("runs.col.report"): [yes if folder.has_report else no for folder in folders],
        }
    )
    st.dataframe(table, hide_index=True, width="stretch")


def render_curves(selected: list[rundata.RunFolder]) -> None:
    """Draw the learning curves of the selected runs, overlaid, for one chosen tag."""
    st.subheader(t("runs.curves.title"))
    frames = []
    for folder in selected:
        curves, problems = load_curves(folder.path)
        show_problems(problems, where=folder.label)
        if not curves.empty:
            frames.append(curves.assign(run=folder.label))
    if not frames:
        st.info(t("runs.curves.none"))
        return
    combined = pd.concat(frames, ignore_index=True)
    tags = sorted(combined["tag"].unique())
    default = tags.index(DEFAULT_TAG) if DEFAULT_TAG in tags else 0
    tag = st.selectbox(t("runs.curves.tag"), options=tags, index=default, key="curve_tag")
    chart = learning_curve_chart(combined, tag, color="run" if len(selected) > 1 else None)
    st.altair_chart(chart, width="stretch")


def render_metrics(selected: list[rundata.RunFolder]) -> None:
    """Draw the metrics with 95% CIs: a full table for one run, side by side for several."""
    st.subheader(t("runs.metrics.title"))
    summaries = {}
    for folder in selected:
        summary = load_summary(folder.path)
        show_problems(summary.problems, where=folder.label)
        if summary.metrics:
            summaries[folder.label] = summary
    if not summaries:
        st.info(t("runs.metrics.none"))
        return
    if len(summaries) == 1:
        summary = next(iter(summaries.values()))
        headers = {"metric": t("runs.col.metric"), "value": t("runs.col.value"), "ci95_low": t("runs.col.ci_low"), "ci95_high": t("runs.col.ci_high")}
        headers.update({name: t("runs.col.baseline", name=name) for name in summary.baselines})
        table = rundata.metrics_table(summary).rename(columns=headers)
        st.dataframe(table, hide_index=True, width="stretch")
        info = summary.info
        if info:
            st.caption(
                t(
                    "runs.metrics.info",
                    agent=info.get("agent", "—"),
                    episodes=info.get("episodes", "—"),
                    seed=info.get("seed", "—"),
                )
            )
    else:
        st.dataframe(rundata.comparison_table(summaries), width="stretch")
        st.caption(t("runs.metrics.ci_note"))


def render_report(folder: rundata.RunFolder) -> None:
    """Draw report.md with its PNG plots taken from the run folder."""
    report = folder.path / "report.md"
    try:
        text = report.read_text(encoding="utf-8")
    except FileNotFoundError:
        st.info(t("runs.report.none"))
        return
    except (OSError, UnicodeDecodeError) as error:
        st.warning(t("runs.report.unreadable", error=error), icon=":material/warning:")
        return
    for kind, content in rundata.split_report(text):
        if kind == "markdown":
            st.markdown(rundata.demote_headings(content))
            continue
        image = rundata.resolve_inside(folder.path, content)
        if image is not None and image.is_file():
            st.image(str(image))
        else:
            st.caption(t("runs.report.image_missing", file=content))


def render_checkpoints(folder: rundata.RunFolder) -> None:
    """List the run's checkpoints, or show a warning when it has none."""
    checkpoints = rundata.list_checkpoints(folder.path)
    if not checkpoints:
        st.warning(t("runs.checkpoints.none", folder=folder.label), icon=":material/warning:")
        return
    for checkpoint in checkpoints:
        if not checkpoint.complete:
            st.warning(t("runs.checkpoints.incomplete", stem=checkpoint.stem), icon=":material/warning:")
        elif not checkpoint.metadata_readable:
            st.warning(t("runs.checkpoints.corrupt", stem=checkpoint.stem), icon=":material/warning:")
        else:
            step = checkpoint.global_step if checkpoint.global_step is not None else "—"
            st.markdown(t("runs.checkpoints.entry", stem=checkpoint.stem, step=step))


def render_details(selected: list[rundata.RunFolder]) -> None:
    """Draw the report, checkpoints and scenario of one of the selected runs."""
    st.subheader(t("runs.details.title"))
    by_label = {folder.label: folder for folder in selected}
    label = st.selectbox(t("runs.details.run"), options=list(by_label), key="detail_run") if len(selected) > 1 else selected[0].label
    folder = by_label[label]
    report_tab, checkpoints_tab, scenario_tab = st.tabs([t("runs.tab.report"), t("runs.tab.checkpoints"), t("runs.tab.scenario")])
    with report_tab:
        render_report(folder)
    with checkpoints_tab:
        render_checkpoints(folder)
    with scenario_tab:
        scenario_file = folder.path / "scenario.yaml"
        try:
            st.code(scenario_file.read_text(encoding="utf-8"), language="yaml")
        except (OSError, UnicodeDecodeError):
            st.info(t("runs.scenario.none"))


def render() -> None:
    """Draw the Runs page."""
    st.title(t("runs.title"))
    runs_root = rundata.runs_dir()
    st.caption(t("runs.folder", folder=str(runs_root)))

    render_start_form(runs_root)
    render_jobs(runs_root)

    folders = rundata.list_run_folders(runs_root)
    if not folders:
        st.info(t("runs.none", folder=str(runs_root)))
        return
    st.subheader(t("runs.list.title", count=len(folders)))
    render_overview(folders)

    labels = [folder.label for folder in folders]
    if "selected_runs" in st.session_state:
        # A run folder deleted since the last rerun must leave the selection, or the widget rejects it.
        st.session_state["selected_runs"] = [label for label in st.session_state["selected_runs"] if label in labels]
    else:
        st.session_state["selected_runs"] = labels[:1]
    chosen = st.multiselect(t("runs.select"), options=labels, key="selected_runs", help=t("runs.select_help"))
    selected = [folder for folder in folders if folder.label in chosen]
    if not selected:
        st.info(t("runs.select_none"))
        return
    render_curves(selected)
    render_metrics(selected)
    render_details(selected)


if __name__ == "__main__":
    render()
