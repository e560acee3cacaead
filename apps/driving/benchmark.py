"""Benchmark table on highway-fast-v0: shielded PPO-Lagrangian, PPO, IDM/MOBIL and random over the same seeds.

Usage (one agent per process, so they can run in parallel; then ``table`` joins the results)::

    python -m apps.driving.benchmark AGENT --episodes 20 --seeds 10000 10001 10002 10003 10004 --out DIR
    python -m apps.driving.benchmark table --out DIR

AGENT is ``shielded_ppo_lagrangian``, ``ppo_lagrangian``, ``ppo``, ``dqn``, ``idm``, ``random`` or
``shielded_random``. Learned agents load the checkpoints shipped with their scenarios.

Targets: collision rate <= 2% for the shielded or Lagrangian PPO over >= 100 episodes on >= 5
seeds, and a return above 19.7, the published Stable-Baselines3 DQN return on highway-fast-v0 after
20k steps.
"""

# NOTE: the 19.7 reference is taken as given; its publication was not reopened when this was written.

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from apps.driving.baselines import idm_policy, random_policy
from apps.driving.envs import KIND, with_ego_controller
from shared.evaluation import agent_policy, evaluate_policy, summarize

SCENARIOS_DIR = Path(__file__).resolve().parents[2] / "scenarios" / "driving"

# Agent -> (scenario file, ego controller, policy source).
AGENTS: dict[str, tuple[str, str, str]] = {
    "shielded_ppo_lagrangian": ("highway_safe_ppo.yaml", "agent", "checkpoint"),
    "ppo_lagrangian": ("highway_ppo_lagrangian.yaml", "agent", "checkpoint"),
    "ppo": ("highway_ppo.yaml", "agent", "checkpoint"),
    "dqn": ("highway_dqn.yaml", "agent", "checkpoint"),
    "idm": ("highway_ppo.yaml", "idm", "idm"),
    "random": ("highway_ppo.yaml", "agent", "random"),
    "shielded_random": ("highway_safe_ppo.yaml", "agent", "random"),
}

TABLE_METRICS = ("collision_rate", "return_mean", "cost_mean", "ttc_violation_rate", "min_ttc_mean", "speed_mean", "progress_m_mean", "lane_changes_mean")


def evaluate_benchmark_agent(agent: str, episodes: int, seeds: list[int]) -> dict[str, Any]:
    """Evaluate one benchmark agent; return the summary with per-episode metrics and the wall time."""
    from shared.checkpoints import load_agent
    from shared.scenario import load_scenario

    scenario_file, controller, source = AGENTS[agent]
    loaded = with_ego_controller(load_scenario(str(SCENARIOS_DIR / scenario_file)), controller)
    probe = KIND.make_env(loaded, seed=seeds[0], training=False)
    if source == "checkpoint":
        learner = KIND.build_agent(loaded, probe, 0, loaded.scenario.seed)
        load_agent(learner, loaded.resolve_path(loaded.scenario.checkpoint_path), weights_only=True)
        policy = agent_policy(learner, deterministic=True)
    elif source == "idm":
        policy = idm_policy(probe.action_space)
    else:
        policy = random_policy(probe.action_space, loaded.scenario.seed)
    probe.close()

    started = time.perf_counter()
    per_episode = evaluate_policy(
        lambda seed: KIND.make_env(loaded, seed=seed, training=False), policy, lambda: KIND.episode_tracker(loaded), episodes, seeds
    )
    summary = summarize(per_episode, 2000, 0)
    summary.update({"agent": agent, "seeds": seeds, "episodes_per_seed": episodes, "wall_s": round(time.perf_counter() - started, 1)})
    return summary


def markdown_table(summaries: list[dict[str, Any]]) -> str:
    """Return a Markdown table of the benchmark metrics, each with its bootstrap 95% CI."""
    lines = ["| agent | episodes | " + " | ".join(TABLE_METRICS) + " |", "|" + "---|" * (len(TABLE_METRICS) + 2)]
    for summary in summaries:
        cells = []
        for metric in TABLE_METRICS:
            value = summary["metrics"].get(metric)
            low, high = summary["ci95"].get(metric, [value, value])
            cells.append("n/a" if value is None else f"{value:.3g} [{low:.3g}, {high:.3g}]")
        lines.append(f"| {summary['agent']} | {summary['episodes']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m apps.driving.benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("agent", choices=[*AGENTS, "table"])
    parser.add_argument("--episodes", type=int, default=20, help="episodes per seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[10_000, 10_001, 10_002, 10_003, 10_004])
    parser.add_argument("--out", type=Path, required=True, help="folder for <agent>.json and benchmark.md")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.agent == "table":
        summaries = [json.loads((args.out / f"{name}.json").read_text()) for name in AGENTS if (args.out / f"{name}.json").exists()]
        table = markdown_table(summaries)
        (args.out / "benchmark.md").write_text(table + "\n", encoding="utf-8")
        sys.stdout.write(table + "\n")
        return 0
    summary = evaluate_benchmark_agent(args.agent, args.episodes, args.seeds)
    (args.out / f"{args.agent}.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
