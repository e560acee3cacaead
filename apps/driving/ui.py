"""Streamlit page of the driving app: one rendered highway episode with a live safety panel, and the latest evaluation.

Streamlit runs this file as a page script each time the page is open (see streamlit_app.py).
An episode runs only on a button press; the evaluation files are read through ``st.cache_data``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from shared.ui.i18n import t

logger = logging.getLogger("scenariolab.ui.driving")

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "scenarios" / "driving"
SHIPPED_README = ROOT / "apps" / "driving" / "checkpoints" / "README.md"

# Demo agent -> label; the field's own names, identical in every language except "random".
AGENT_LABELS: dict[str, str] = {
    "shielded_ppo": "PPO-Lagrangian + shield",
    "ppo_lagrangian": "PPO-Lagrangian",
    "ppo": "PPO",
    "idm": "IDM/MOBIL",
    "random": "random",
}
# The level at which each perturbation leaves the env unchanged (density is a factor on traffic).
NEUTRAL_LEVELS: dict[str, float] = {"density": 1.0}
DEFAULT_STEPS = 30


def agent_label(agent: str) -> str:
    return t("driving.agent.random") if agent == "random" else AGENT_LABELS[agent]


@st.cache_data(show_spinner=False)
def perturbation_ranges() -> dict[str, tuple[float, float, str]]:
    """Return (low, high, description) of each driving perturbation, as the driving kind declares them."""
    from apps.driving.perturbations import PERTURBATIONS

    return {name: (float(p.low), float(p.high), p.description) for name, p in PERTURBATIONS.items()}


@st.cache_resource(show_spinner=False)
def warm_up_driving() -> bool:
    """Import highway-env and the driving kind once per server (a few seconds on a cold start)."""
    import apps.driving.demo  # noqa: F401

    return True


def perturbation_controls() -> dict[str, float]:
    """Draw one slider per perturbation and return the levels that differ from the neutral level."""
    levels: dict[str, float] = {}
    with st.expander(t("driving.perturb.title")):
        for name, (low, high, description) in perturbation_ranges().items():
            neutral = NEUTRAL_LEVELS.get(name, low)
            step = 1.0 if name == "action_delay" else 0.05
            value = st.slider(name, min_value=low, max_value=high, value=neutral, step=step, help=description, key=f"drive_perturb_{name}")
            if not math.isclose(value, neutral):
                levels[name] = float(value)
    return levels


def show_panel(slot: Any, panel: dict[str, Any]) -> None:
    """Draw the speed, TTC, cost and shield figures of one step into ``slot``."""
    with slot.container():
        first, second, third = st.columns(3)
        first.metric(t("driving.panel.speed"), f"{panel['speed']:.1f}")
        second.metric("TTC", f"{panel['ttc']:.2f} s")
        third.metric(t("driving.panel.headway"), f"{panel['headway']:.2f} s")
        first.metric(t("driving.panel.cost"), f"{panel['cost']:.2f}", help=t("driving.panel.cost_help", total=panel["episode_cost"]))
        second.metric(t("driving.panel.shield"), str(panel["shield_interventions"]))
        third.metric(t("driving.panel.return"), f"{panel['episode_return']:.2f}")
        st.caption(t("driving.panel.step", step=panel["step"], action=panel["action"]))


@contextlib.contextmanager
def highway_drawing_enabled() -> Iterator[None]:
    """Lift ``SDL_VIDEODRIVER=dummy`` while highway-env builds its viewer, so rgb_array frames are drawn.

    highway-env's EnvViewer skips all drawing when that variable is "dummy", which leaves every
    rgb_array frame black; its offscreen surfaces need no video driver at all.
    """
    # Limitation: os.environ is process-wide, so another session that starts pygame during these
    # few seconds would not see the variable either.
    previous = os.environ.get("SDL_VIDEODRIVER")
    if previous == "dummy":
        del os.environ["SDL_VIDEODRIVER"]
    try:
        yield
    finally:
        if previous == "dummy":
            os.environ["SDL_VIDEODRIVER"] = previous


def run_episode(agent: str, perturb: dict[str, float], seed: int, steps: int) -> None:
    """Play the episode, drawing frames, the panel and a progress bar; store the panels for reruns."""
    from apps.driving.demo import play_episode

    frame_slot, panel_slot = st.columns([3, 2])
    frame = frame_slot.empty()
    panel = panel_slot.empty()
    progress = st.progress(0.0, text=t("driving.progress", step=0, total=steps))
    panels: list[dict[str, Any]] = []
    last_frame = None
    with highway_drawing_enabled():
        for last_frame, step_panel in play_episode(agent, perturb=perturb, seed=seed, max_steps=steps):
            panels.append(step_panel)
            frame.image(last_frame, width="stretch")
            show_panel(panel, step_panel)
            progress.progress(min(1.0, step_panel["step"] / steps), text=t("driving.progress", step=step_panel["step"], total=steps))
    progress.empty()
    st.session_state["drive_episode"] = {"panels": panels, "frame": last_frame, "agent": agent, "seed": seed, "perturb": perturb}


def render_episode_result() -> None:
    """Draw the last episode's final frame, panel, outcome and per-step curves (kept across reruns)."""
    episode = st.session_state.get("drive_episode")
    if not episode or not episode["panels"]:
        return
    panels = episode["panels"]
    last = panels[-1]
    frame_slot, panel_slot = st.columns([3, 2])
    if episode["frame"] is not None:
        frame_slot.image(episode["frame"], width="stretch")
    show_panel(panel_slot.empty(), last)
    outcome = t("driving.crashed", step=last["step"]) if last["crashed"] else t("driving.survived", step=last["step"])
    (st.warning if last["crashed"] else st.success)(outcome)
    table = pd.DataFrame(
        {"step": [p["step"] for p in panels], "speed": [p["speed"] for p in panels], "TTC": [p["ttc"] for p in panels], "cost": [p["cost"] for p in panels]}
    ).set_index("step")
    st.line_chart(table, height=220)


@st.cache_data(show_spinner=False)
def latest_evaluation(root: str, signature: tuple[Any, ...]) -> dict[str, Any] | None:
    """Return the newest driving run folder with a metrics.json, its metrics table and robustness plots."""
    from shared.ui.rundata import list_run_folders, metrics_table, read_summary

    stems = {path.stem for path in SCENARIOS.glob("*.yaml")}
    for folder in list_run_folders(Path(root)):
        if folder.scenario in stems and folder.has_metrics_json:
            summary = read_summary(folder.path)
            if summary.problems:
                continue
            plots = sorted(str(path) for path in folder.path.glob("**/robustness_*.png"))
            return {"folder": str(folder.path), "scenario": folder.scenario, "table": metrics_table(summary), "plots": plots}
    return None


def shipped_benchmark() -> str | None:
    """Return the benchmark section of the shipped checkpoints' README (a markdown table), if present."""
    try:
        text = SHIPPED_README.read_text(encoding="utf-8")
    except OSError:
        return None
    match = re.search(r"^## Benchmark.*?$(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    return match.group(1).strip() if match else None


def render_evaluation() -> None:
    """Draw the safety table and robustness curves of the newest driving run, else the shipped benchmark."""
    from shared.ui.rundata import folder_signature, list_run_folders, runs_dir

    st.subheader(t("driving.eval.title"))
    root = runs_dir()
    signature = tuple((str(f.path), folder_signature(f.path)) for f in list_run_folders(root))
    latest = latest_evaluation(str(root), signature)
    if latest is not None:
        st.caption(t("driving.eval.from_run", folder=latest["folder"]))
        st.dataframe(latest["table"], hide_index=True, width="stretch")
        if latest["plots"]:
            st.markdown(f"**{t('driving.eval.curves')}**")
            columns = st.columns(2)
            for index, plot in enumerate(latest["plots"]):
                columns[index % 2].image(plot, caption=Path(plot).stem)
        else:
            st.info(t("driving.eval.no_curves"), icon=":material/info:")
        return
    benchmark = shipped_benchmark()
    if benchmark:
        st.info(t("driving.eval.no_runs_shipped"), icon=":material/info:")
        st.markdown(benchmark)
    else:
        st.info(t("driving.eval.none"), icon=":material/info:")


def render() -> None:
    """Draw the page: agent, perturbations and episode length, the episode, then the evaluation."""
    from shared.errors import ScenarioLabError

    st.title(t("nav.driving"))
    st.markdown(t("driving.intro"))
    with st.spinner(t("driving.loading")):
        warm_up_driving()
    from apps.driving.demo import DEMO_SCENARIOS

    left, right = st.columns(2)
    # The options are the translated labels. A translating format_func would run in AppTest's own
    # process in English, so its labels would not match the session's.
    labels = {agent_label(name): name for name in AGENT_LABELS}
    agent = labels[left.selectbox(t("driving.agent"), list(labels), key="drive_agent")]
    left.caption(t("driving.scenario", file=f"scenarios/driving/{DEMO_SCENARIOS[agent]}"))
    steps = int(right.slider(t("driving.steps"), 5, 100, DEFAULT_STEPS, step=5, key="drive_steps"))
    seed = int(right.number_input(t("driving.seed"), min_value=0, max_value=100_000, value=0, step=1, key="drive_seed"))
    perturb = perturbation_controls()
    if st.button(t("driving.run"), type="primary", key="drive_run", icon=":material/play_arrow:"):
        try:
            run_episode(agent, perturb, seed, steps)
        except ScenarioLabError as error:
            logger.warning("driving episode of %s rejected: %s", agent, error)
            st.error(t("driving.bad_input", error=str(error).splitlines()[0]), icon=":material/error:")
        except Exception as error:  # noqa: BLE001  (a failed episode becomes a message, never a traceback)
            logger.exception("driving episode of %s with perturbations %s failed", agent, perturb)
            st.error(t("driving.episode_failed", error=f"{type(error).__name__}: {error}"), icon=":material/error:")
        else:
            st.rerun()
    render_episode_result()
    render_evaluation()


if __name__ == "__main__":
    render()
