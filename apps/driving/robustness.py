"""Robustness sweeps: evaluate several agents at increasing perturbation levels and plot one curve per agent.

:func:`run_robustness` visits each level of each perturbation, evaluates every agent there
(episodes x seeds, the same seeds for every agent) and writes into ``out_dir``:

- ``robustness.json``: per perturbation, level and agent, the aggregated metrics with 95% CIs;
- ``robustness_<perturbation>_<metric>.png``: the metric against the level, one line per agent;
- ``robustness.md``: the worst case of each agent on each metric over all levels, and where it happened.

The ``driving_robustness`` kind runs it from a scenario (``settings.robustness``), so
``scenariolab run scenarios/driving/highway_robustness.yaml`` draws the curves.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import gymnasium as gym

from apps.driving.baselines import idm_policy, random_policy
from apps.driving.envs import KIND, DrivingKind, DrivingSettings, with_ego_controller
from shared.errors import ScenarioError, located
from shared.evaluation import agent_policy, evaluate_policy, summarize
from shared.registry import register_kind
from shared.rundir import atomic_write_bytes, atomic_write_json

if TYPE_CHECKING:
    from shared.kinds import EvalOptions, RunOptions
    from shared.rundir import RunDir
    from shared.scenario import LoadedScenario

logger = logging.getLogger("scenariolab.driving.robustness")

Policy = Callable[[Any], Any]

# Metrics drawn and tabulated, with the direction that counts as worse.
ROBUSTNESS_METRICS: dict[str, str] = {
    "collision_rate": "max",
    "cost_mean": "max",
    "ttc_violation_rate": "max",
    "min_ttc_mean": "min",
    "return_mean": "min",
    "speed_mean": "min",
}


@dataclass
class SweepAgent:
    """One agent of a sweep: how to build its policy for an env, and who drives the ego vehicle."""

    name: str
    make_policy: Callable[[gym.Env, int], Policy]
    ego_controller: str = "agent"  # "idm" swaps the ego vehicle for highway-env's IDM/MOBIL model


def idm_agent() -> SweepAgent:
    """Return the IDM/MOBIL rule baseline as a sweep agent."""
    return SweepAgent("idm", lambda env, _seed: idm_policy(env.action_space), "idm")


def random_agent() -> SweepAgent:
    """Return the uniform random policy as a sweep agent."""
    return SweepAgent("random", lambda env, seed: random_policy(env.action_space, seed))


def checkpoint_agent(kind: DrivingKind, loaded: "LoadedScenario", checkpoint: Path, name: str = "checkpoint") -> SweepAgent:
    """Return the scenario's agent loaded from ``checkpoint`` (weights only), acting deterministically."""
    from shared.checkpoints import load_agent

    probe = kind.make_env(loaded, seed=0, training=False)
    agent = kind.build_agent(loaded, probe, 0, loaded.scenario.seed)
    probe.close()
    load_agent(agent, checkpoint, weights_only=True)
    policy = agent_policy(agent, loaded.scenario.evaluation.deterministic)
    return SweepAgent(name, lambda _env, _seed: policy)


def evaluate_sweep_agent(
    kind: DrivingKind, loaded: "LoadedScenario", agent: SweepAgent, perturb: dict[str, float], episodes: int, seeds: list[int]
) -> dict[str, Any]:
    """Evaluate one agent under ``perturb``; return ``{"metrics", "ci95", "episodes"}``."""
    scenario = with_ego_controller(loaded, agent.ego_controller)

    def make_env(seed: int) -> gym.Env:
        return kind.make_env(scenario, seed=seed, perturb=perturb, training=False)

    probe = make_env(seeds[0])
    policy = agent.make_policy(probe, loaded.scenario.seed)
    probe.close()
    per_episode = evaluate_policy(make_env, policy, lambda: kind.episode_tracker(scenario), episodes, seeds)
    return summarize(per_episode, loaded.scenario.evaluation.bootstrap_samples, loaded.scenario.seed)


def run_robustness(
    loaded: "LoadedScenario",
    agents: list[SweepAgent],
    levels: dict[str, list[float]],
    out_dir: Path,
    episodes: int = 5,
    seeds: list[int] | None = None,
    kind: DrivingKind = KIND,
) -> dict[str, Any]:
    """Sweep each perturbation over its levels for every agent; write JSON, PNG curves and a worst-case table."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seeds = seeds or list(loaded.scenario.evaluation.seeds)
    source = str(loaded.source)
    for name, values in levels.items():
        for level in values:
            kind.validate_driving_perturb(loaded, {name: level}, source, "levels")

    results: dict[str, Any] = {}
    for name, values in levels.items():
        results[name] = {}
        for level in values:
            results[name][str(level)] = {}
            for agent in agents:
                logger.info("robustness: %s=%s, agent %s", name, level, agent.name)
                results[name][str(level)][agent.name] = evaluate_sweep_agent(kind, loaded, agent, {name: level}, episodes, seeds)

    summary = {"scenario": loaded.scenario.name, "episodes_per_seed": episodes, "seeds": seeds, "agents": [a.name for a in agents], "results": results}
    atomic_write_json(out_dir / "robustness.json", summary)
    plots = plot_robustness(results, [a.name for a in agents], out_dir)
    table = worst_case_table(results, [a.name for a in agents])
    lines = ["## Robustness", "", f"{episodes} episodes on each of {len(seeds)} seeds per agent and level.", "", table, ""]
    lines += [f"![{plot.stem}]({plot.name})" for plot in plots]
    atomic_write_bytes(out_dir / "robustness.md", "\n".join(lines).encode("utf-8"))
    summary["report_section"] = "\n".join(lines)
    return summary


def plot_robustness(results: dict[str, Any], agent_names: list[str], out_dir: Path) -> list[Path]:
    """Draw one PNG per perturbation and metric: the metric against the level, one line (with CI band) per agent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for perturbation, by_level in results.items():
        levels = sorted(by_level, key=float)
        for metric in ROBUSTNESS_METRICS:
            figure, axis = plt.subplots(figsize=(5, 3.5))
            drawn = False
            for agent in agent_names:
                xs, ys, lows, highs = [], [], [], []
                for level in levels:
                    entry = by_level[level].get(agent)
                    if entry is None or metric not in entry["metrics"]:
                        continue
                    xs.append(float(level))
                    ys.append(entry["metrics"][metric])
                    low, high = entry["ci95"].get(metric, [ys[-1], ys[-1]])
                    lows.append(low)
                    highs.append(high)
                if xs:
                    axis.plot(xs, ys, marker="o", label=agent)
                    axis.fill_between(xs, lows, highs, alpha=0.2)
                    drawn = True
            if not drawn:
                plt.close(figure)
                continue
            axis.set_xlabel(perturbation)
            axis.set_ylabel(metric)
            axis.set_title(f"{metric} under {perturbation}")
            axis.legend()
            figure.tight_layout()
            path = out_dir / f"robustness_{perturbation}_{metric}.png"
            figure.savefig(path, dpi=80)
            plt.close(figure)
            paths.append(path)
    return paths


def worst_case_table(results: dict[str, Any], agent_names: list[str]) -> str:
    """Return a Markdown table: for each agent and metric, the worst value over all perturbations and levels."""
    header = "| agent | " + " | ".join(f"{metric} (worst)" for metric in ROBUSTNESS_METRICS) + " |"
    lines = [header, "|" + "---|" * (len(ROBUSTNESS_METRICS) + 1)]
    for agent in agent_names:
        cells = []
        for metric, direction in ROBUSTNESS_METRICS.items():
            worst: tuple[float, str] | None = None
            for perturbation, by_level in results.items():
                for level, by_agent in by_level.items():
                    value = by_agent.get(agent, {}).get("metrics", {}).get(metric)
                    if value is None:
                        continue
                    if worst is None or (value > worst[0] if direction == "max" else value < worst[0]):
                        worst = (value, f"{perturbation}={level}")
            cells.append(f"{worst[0]:.3g} at {worst[1]}" if worst else "n/a")
        lines.append(f"| {agent} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


class DrivingRobustnessKind(DrivingKind):
    """Sweep the perturbations of ``settings.robustness`` for a checkpoint, IDM and random agents."""

    name = "driving_robustness"
    description = "Robustness sweep of a driving checkpoint against IDM and random agents, with one curve per agent."

    def validate(self, loaded: "LoadedScenario") -> None:
        super().validate(loaded)
        settings = self.settings_of(loaded)
        if settings.robustness is None or not settings.robustness.levels:
            raise ScenarioError(located(str(loaded.source), "settings.robustness.levels", "required for kind 'driving_robustness': a mapping of perturbation name to levels"))

    def _agents(self, loaded: "LoadedScenario", checkpoint: Path | None) -> list[SweepAgent]:
        settings: DrivingSettings = self.settings_of(loaded)
        assert settings.robustness is not None
        # Agents that act through the scenario's shield carry "+shield" in their name; IDM never does,
        # because the IDM vehicle ignores the actions the shield would filter.
        suffix = "+shield" if settings.shield.enabled else ""
        agents = []
        for name in settings.robustness.agents:
            if name == "checkpoint":
                if checkpoint is None:
                    raise ScenarioError(located(str(loaded.source), "checkpoint_path", "the sweep includes 'checkpoint' but no checkpoint is given"))
                agents.append(checkpoint_agent(self, loaded, checkpoint, loaded.scenario.agent.get("name", "checkpoint") + suffix))
            elif name == "idm":
                agents.append(idm_agent())
            else:
                agent = random_agent()
                agent.name += suffix
                agents.append(agent)
        return agents

    def _sweep(self, loaded: "LoadedScenario", run_dir: "RunDir", checkpoint: Path | None, episodes: int | None, seeds: list[int] | None) -> dict[str, Any]:
        from shared.report import write_report
        from shared.rundir import metrics_summary

        settings = self.settings_of(loaded)
        assert settings.robustness is not None
        run_dir.write_scenario(loaded)
        sweep = run_robustness(
            loaded,
            self._agents(loaded, checkpoint),
            settings.robustness.levels,
            run_dir.path,
            episodes or settings.robustness.episodes,
            seeds or settings.robustness.seeds,
            kind=self,
        )
        # metrics.json carries the unperturbed level of the first agent, with the others as baselines.
        first_perturbation = next(iter(sweep["results"].values()))
        first_level = first_perturbation[sorted(first_perturbation, key=float)[0]]
        names = sweep["agents"]
        main = first_level[names[0]]
        baselines = {name: {"metrics": first_level[name]["metrics"], "ci95": first_level[name]["ci95"]} for name in names[1:]}
        metrics = metrics_summary(loaded, names[0], loaded.scenario.seed, main["episodes"], main["metrics"], main["ci95"], baselines, extra={"robustness": "robustness.json"})
        run_dir.write_metrics(metrics)
        write_report(run_dir.path, [sweep["report_section"]])
        return metrics

    def run(self, loaded: "LoadedScenario", run_dir: "RunDir", options: "RunOptions") -> dict[str, Any]:
        checkpoint = loaded.resolve_path(loaded.scenario.checkpoint_path) if loaded.scenario.checkpoint_path else None
        return self._sweep(loaded, run_dir, checkpoint, None, None)

    def evaluate(self, loaded: "LoadedScenario", run_dir: "RunDir", options: "EvalOptions") -> dict[str, Any]:
        checkpoint = options.checkpoint or (loaded.resolve_path(loaded.scenario.checkpoint_path) if loaded.scenario.checkpoint_path else None)
        return self._sweep(loaded, run_dir, checkpoint, options.episodes, options.seeds)


ROBUSTNESS_KIND = DrivingRobustnessKind()


def register() -> None:
    """Register the ``driving_robustness`` kind with the shared registry."""
    register_kind(ROBUSTNESS_KIND)
