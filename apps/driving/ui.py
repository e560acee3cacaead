"""Streamlit page of the driving app: one rendered episode of a chosen scenario and agent with a live safety panel, and the latest evaluation.

Streamlit runs this file as a page script each time the page is open (see streamlit_app.py).
An episode runs only on a button press. The scenario files and evaluation files are read through
``st.cache_data``, and highway-env is imported once per server through ``st.cache_resource``.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import streamlit as st

from shared.ui.i18n import t

if TYPE_CHECKING:
    from apps.driving.demo import AgentChoice

logger = logging.getLogger("scenariolab.ui.driving")

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "scenarios" / "driving"
SHIPPED_README = ROOT / "apps" / "driving" / "checkpoints" / "README.md"
# The env of the shipped benchmark in SHIPPED_README.
BENCHMARK_ENV_ID = "highway-fast-v0"

# Rule agents' labels; learned agents are labelled by their algorithm (apps.driving.demo.ALGORITHMS).
RULE_LABELS: dict[str, str] = {"idm": "IDM/MOBIL"}
# The level at which each perturbation leaves the env unchanged (density is a factor on traffic).
NEUTRAL_LEVELS: dict[str, float] = {"density": 1.0}
DEFAULT_STEPS = 30


def agent_label(choice: "AgentChoice") -> str:
    """Return the agent's name as the field writes it (PPO-Lagrangian, IDM/MOBIL), marked when the shield is on."""
    from apps.driving.demo import ALGORITHMS

    if choice.agent == "random":
        name = t("driving.agent.random")
    else:
        name = ALGORITHMS.get(choice.agent) or RULE_LABELS[choice.agent]
    return t("driving.agent.shielded", agent=name) if choice.shield else name


@st.cache_data(show_spinner=False)
def scenario_env_ids() -> dict[str, str | None]:
    """Return the highway-env id of each demo scenario, read from the scenario files."""
    from apps.driving.demo import scenario_env_ids as read_env_ids

    return read_env_ids()


@st.cache_data(show_spinner=False)
def cached_agent_choices(scenario: str) -> list["AgentChoice"]:
    """Return the agents of ``scenario`` with their scenario files or the reasons they are not offered."""
    from apps.driving.demo import agent_choices

    return agent_choices(scenario)


@st.cache_data(show_spinner=False)
def perturbation_ranges(scenario: str) -> dict[str, tuple[float, float, str]]:
    """Return (low, high, description) of each perturbation that applies to ``scenario``."""
    from apps.driving.demo import perturbations_for

    return {name: (float(p.low), float(p.high), p.description) for name, p in perturbations_for(scenario).items()}


@st.cache_resource(show_spinner=False)
def warm_up_driving() -> bool:
    """Import highway-env and the driving kind once per server (a few seconds on a cold start)."""
    import apps.driving.envs  # noqa: F401

    return True


def perturbation_controls(scenario: str) -> dict[str, float]:
    """Draw one slider per perturbation of ``scenario`` and return the levels that differ from the neutral level."""
    levels: dict[str, float] = {}
    with st.expander(t("driving.perturb.title")):
        ranges = perturbation_ranges(scenario)
        for name, (low, high, description) in ranges.items():
            neutral = NEUTRAL_LEVELS.get(name, low)
            step = 1.0 if name == "action_delay" else 0.05
            value = st.slider(name, min_value=low, max_value=high, value=neutral, step=step, help=description, key=f"drive_perturb_{name}")
            if not math.isclose(value, neutral):
                levels[name] = float(value)
        if "obs_noise" not in ranges:
            st.caption(t("driving.perturb.no_kinematics"))
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


def run_episode(choice: "AgentChoice", perturb: dict[str, float], seed: int, steps: int) -> None:
    """Play the episode, drawing frames, the panel and a progress bar; store the panels for reruns."""
    from apps.driving.demo import play_episode

    frame_slot, panel_slot = st.columns([3, 2])
    frame = frame_slot.empty()
    panel = panel_slot.empty()
    progress = st.progress(0.0, text=t("driving.progress", step=0, total=steps))
    panels: list[dict[str, Any]] = []
    last_frame = None
    for last_frame, step_panel in play_episode(choice.scenario, choice.agent, perturb=perturb, seed=seed, max_steps=steps):
        panels.append(step_panel)
        frame.image(last_frame, width="stretch")
        show_panel(panel, step_panel)
        progress.progress(min(1.0, step_panel["step"] / steps), text=t("driving.progress", step=step_panel["step"], total=steps))
    progress.empty()
    st.session_state["drive_episode"] = {
        "panels": panels,
        "frame": last_frame,
        "choice": choice,
        "seed": seed,
        "perturb": perturb,
    }


def render_episode_result() -> None:
    """Draw the last episode's final frame, panel, outcome and per-step curves (kept across reruns)."""
    import pandas as pd

    episode = st.session_state.get("drive_episode")
    if not episode or not episode["panels"]:
        return
    panels = episode["panels"]
    last = panels[-1]
    st.caption(t("driving.episode_of", scenario=episode["choice"].scenario, agent=agent_label(episode["choice"]), seed=episode["seed"]))
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


def run_env_id(folder: Path, scenario: str) -> str | None:
    """Return the env id a driving run evaluated: from its scenario.yaml, else from the scenario file of the same name."""
    import yaml

    from shared.errors import ScenarioLabError
    from shared.scenario import read_with_extends

    try:
        resolved = yaml.safe_load((folder / "scenario.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        resolved = None
    env = resolved.get("env") if isinstance(resolved, dict) else None
    if isinstance(env, dict) and "id" in env:
        return str(env["id"])
    try:
        env = read_with_extends(SCENARIOS / f"{scenario}.yaml").get("env")
    except ScenarioLabError:
        return None
    return str(env["id"]) if isinstance(env, dict) and "id" in env else None


@st.cache_data(show_spinner=False)
def latest_evaluation(root: str, signature: tuple[Any, ...], env_id: str) -> dict[str, Any] | None:
    """Return the newest driving run on ``env_id`` with a valid metrics.json: its folder, scenario, metrics table and robustness plots."""
    from shared.ui.rundata import list_run_folders, metrics_table, read_summary

    stems = {path.stem for path in SCENARIOS.glob("*.yaml")}
    for folder in list_run_folders(Path(root)):
        if folder.scenario not in stems or not folder.has_metrics_json or run_env_id(folder.path, folder.scenario) != env_id:
            continue
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


def render_evaluation(scenario: str, env_id: str) -> None:
    """Draw the safety table and robustness curves of the newest run on the picked scenario's env, else the shipped benchmark."""
    from shared.ui.rundata import folder_signature, list_run_folders, runs_dir

    st.subheader(t("driving.eval.title"))
    root = runs_dir()
    signature = tuple((str(f.path), folder_signature(f.path)) for f in list_run_folders(root))
    latest = latest_evaluation(str(root), signature, env_id)
    if latest is not None:
        st.caption(t("driving.eval.from_run", scenario=latest["scenario"], env=env_id, folder=latest["folder"]))
        st.dataframe(latest["table"], hide_index=True, width="stretch")
        if latest["plots"]:
            st.markdown(f"**{t('driving.eval.curves')}**")
            columns = st.columns(2)
            for index, plot in enumerate(latest["plots"]):
                columns[index % 2].image(plot, caption=Path(plot).stem)
        else:
            st.info(t("driving.eval.no_curves"), icon=":material/info:")
        return
    benchmark = shipped_benchmark() if env_id == BENCHMARK_ENV_ID else None
    if benchmark:
        st.info(t("driving.eval.no_runs_shipped", env=env_id), icon=":material/info:")
        st.markdown(benchmark)
    else:
        st.info(t("driving.eval.none", scenario=scenario, env=env_id), icon=":material/info:")


def pick_scenario_and_agent() -> tuple[str, "AgentChoice"]:
    """Draw the scenario and agent pickers; agents without a checkpoint are listed below with the reason."""
    left, right = st.columns(2)
    # The option text is the same in every language ("merge · merge-v1"), so a language switch keeps the pick.
    scenarios = {f"{name} · {env_id}": name for name, env_id in scenario_env_ids().items()}
    scenario = scenarios[left.selectbox(t("driving.scenario_picker"), list(scenarios), key="drive_scenario")]
    choices = cached_agent_choices(scenario)
    offered = [choice for choice in choices if choice.available]
    # The options are the translated labels. A translating format_func would run in AppTest's own
    # process in English, so its labels would not match the session's.
    labels = {agent_label(choice): choice for choice in offered}
    choice = labels[right.selectbox(t("driving.agent"), list(labels), key="drive_agent")]
    assert choice.scenario_file is not None
    shield = t("driving.shield.on") if choice.shield else t("driving.shield.off")
    left.caption(t("driving.scenario", file=f"scenarios/driving/{choice.scenario_file.name}", shield=shield))
    missing = [choice for choice in choices if not choice.available]
    if missing:
        items = [t("driving.not_offered.item", agent=agent_label(item), reason=t(f"driving.unavailable.{item.unavailable}")) for item in missing]
        reasons = t("driving.not_offered.separator").join(items)
        right.caption(t("driving.not_offered", scenario=scenario, reasons=reasons))
    return scenario, choice


def render() -> None:
    """Draw the page: scenario, agent, perturbations and episode length, the episode, then the evaluation."""
    from shared.errors import ScenarioLabError

    st.title(t("nav.driving"))
    st.markdown(t("driving.intro"))
    scenario, choice = pick_scenario_and_agent()
    left, right = st.columns(2)
    steps = int(left.slider(t("driving.steps"), 5, 100, DEFAULT_STEPS, step=5, key="drive_steps"))
    seed = int(right.number_input(t("driving.seed"), min_value=0, max_value=100_000, value=0, step=1, key="drive_seed"))
    with st.spinner(t("driving.loading")):
        warm_up_driving()
    perturb = perturbation_controls(scenario)
    if st.button(t("driving.run"), type="primary", key="drive_run", icon=":material/play_arrow:"):
        try:
            run_episode(choice, perturb, seed, steps)
        except ScenarioLabError as error:
            logger.warning("driving episode of %s on %s rejected: %s", choice.agent, scenario, error)
            st.error(t("driving.bad_input", error=str(error).splitlines()[0]), icon=":material/error:")
        except Exception as error:  # noqa: BLE001  (a failed episode becomes a message, never a traceback)
            logger.exception("driving episode of %s on %s with perturbations %s failed", choice.agent, scenario, perturb)
            st.error(t("driving.episode_failed", error=f"{type(error).__name__}: {error}"), icon=":material/error:")
        else:
            st.rerun()
    render_episode_result()
    render_evaluation(scenario, scenario_env_ids()[scenario] or "")


if __name__ == "__main__":
    render()
