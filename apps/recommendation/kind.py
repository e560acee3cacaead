"""The ``recommendation`` scenario kind: runs the whole pipeline and writes the run folder."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from apps.recommendation.pipeline import (
    RANKERS,
    PipelineState,
    RecommendationSettings,
    effective_settings,
    evaluate_rankers,
    load_shipped_policies,
    prepare,
    save_artefacts,
    simulate,
    train_rerankers,
)
from apps.recommendation.data import check_dataset
from apps.recommendation.reranker import load_policy
from shared.checkpoints import load_checkpoint
from shared.errors import CheckpointError, ScenarioError, located
from shared.kinds import EvalOptions, RunOptions, ScenarioKind
from shared.logging import MetricLogger
from shared.pipeline import configure_torch
from shared.registry import register_kind
from shared.report import write_report
from shared.rundir import RunDir, metrics_summary

logger = logging.getLogger("scenariolab.apps.recommendation.kind")

MIN_SEEDS = 5


class RecommendationKind(ScenarioKind):
    """RecBole candidates, a text encoder, a user simulator and an RL re-ranker, compared with baselines."""

    name = "recommendation"
    domain = "recommendation"
    description = "Re-rank RecBole candidates with an RL policy trained in a user simulator; offline and simulated metrics."
    needs_agent = False
    settings_model = RecommendationSettings
    perturbations: dict = {}

    def validate(self, loaded: Any) -> None:
        scenario = loaded.scenario
        source = str(loaded.source)
        if scenario.domain != "recommendation":
            raise ScenarioError(located(source, "domain", f"kind 'recommendation' needs domain 'recommendation', got {scenario.domain!r}"))
        if scenario.env is not None:
            raise ScenarioError(located(source, "env", "kind 'recommendation' builds its own simulator; remove env and set settings.simulator instead"))
        if scenario.agent:
            raise ScenarioError(located(source, "agent", "kind 'recommendation' takes its re-ranker from settings.reranker; remove agent"))
        if len(scenario.evaluation.seeds) < MIN_SEEDS:
            raise ScenarioError(located(source, "evaluation.seeds", f"needs at least {MIN_SEEDS} seeds for the confidence intervals, got {len(scenario.evaluation.seeds)}"))
        self.validate_perturb(scenario.perturb, source)
        settings: RecommendationSettings = loaded.settings
        try:
            check_dataset(settings.data, loaded.source.parent)
        except ScenarioError as error:
            raise ScenarioError(located(source, "settings.data", str(error))) from None

    def run(self, loaded: Any, run_dir: RunDir, options: RunOptions) -> dict[str, Any]:
        scenario = loaded.scenario
        seed = scenario.seed if options.seed is None else options.seed
        settings = effective_settings(loaded.settings, options.budget)
        total_steps = scenario.steps_for(options.budget)
        run_dir.write_scenario(loaded)
        # One torch thread unless the scenario sets torch_threads: the re-ranker is a small MLP
        # called on one request at a time, and extra threads only add synchronisation cost.
        configure_torch(loaded, image_observations=False)
        base = loaded.source.parent
        metric_logger = MetricLogger(run_dir.path, tensorboard=scenario.logging.tensorboard)
        try:
            state = prepare(settings, base, seed, options.budget, options.progress, run_dir.checkpoints)
            reused = settings.use_shipped and options.budget != "full" and load_shipped_policies(state, base, total_steps)
            if reused:
                state.stages["reranker"] = _stage("shipped")
            else:
                start = time.perf_counter()
                train_rerankers(state, total_steps, seed, metric_logger.log)
                state.stages["reranker"] = _stage("trained", time.perf_counter() - start)
            save_artefacts(state, run_dir.checkpoints, total_steps, seed)
            summary = self._evaluate_and_write(loaded, state, run_dir, seed, settings, metric_logger, total_steps)
        finally:
            metric_logger.close()
        return summary

    def evaluate(self, loaded: Any, run_dir: RunDir, options: EvalOptions) -> dict[str, Any]:
        scenario = loaded.scenario
        settings: RecommendationSettings = loaded.settings
        run_dir.write_scenario(loaded)
        configure_torch(loaded, image_observations=False)
        state = prepare(settings, loaded.source.parent, scenario.seed, "default", False, run_dir.checkpoints)
        if options.checkpoint is not None:
            folder = Path(options.checkpoint)
            folder = folder if folder.is_dir() else folder.parent
            for algorithm in ("reinforce_topk", "ppo"):
                stem = folder / f"reranker_{algorithm}"
                if stem.with_suffix(".safetensors").is_file():
                    tensors, metadata = load_checkpoint(stem)
                    if metadata.get("split_signature") != state.data.split_signature():
                        raise CheckpointError(located(str(stem.with_suffix(".safetensors")), None, "this re-ranker was trained on a different dataset split than the scenario's"))
                    state.policies[algorithm] = load_policy(tensors, metadata)
            if settings.reranker.algorithm not in state.policies:
                raise CheckpointError(located(str(options.checkpoint), None, f"no reranker_{settings.reranker.algorithm}.safetensors in this folder"))
        elif not load_shipped_policies(state, loaded.source.parent, scenario.steps_for("default")):
            raise CheckpointError(located(str(loaded.source), "--checkpoint", "no shipped re-ranker matches this scenario; pass the checkpoints folder of a run"))
        if options.seeds:
            scenario = scenario.model_copy(update={"evaluation": scenario.evaluation.model_copy(update={"seeds": options.seeds})})
        metric_logger = MetricLogger(run_dir.path, tensorboard=False)
        try:
            return self._evaluate_and_write(loaded, state, run_dir, scenario.seed, settings, metric_logger, 0, options.episodes, scenario.evaluation.seeds)
        finally:
            metric_logger.close()

    def _evaluate_and_write(
        self,
        loaded: Any,
        state: PipelineState,
        run_dir: RunDir,
        seed: int,
        settings: RecommendationSettings,
        metric_logger: MetricLogger,
        total_steps: int,
        episodes: int | None = None,
        seeds: list[int] | None = None,
    ) -> dict[str, Any]:
        scenario = loaded.scenario
        seeds = list(seeds or scenario.evaluation.seeds)
        sessions = episodes or (settings.smoke.sessions_per_seed if state.data.num_users <= settings.smoke.max_users else scenario.evaluation.episodes)
        names = [name for name in RANKERS if name in ("base", "random", "text_similarity") or name in state.policies]
        start = time.perf_counter()
        results = evaluate_rankers(state, names, seeds, sessions)
        info = results.pop("_info")
        evaluation_seconds = time.perf_counter() - start
        main = settings.reranker.algorithm
        baselines = {name: {"metrics": result["metrics"], "ci95": result["ci95"]} for name, result in results.items() if name != main}
        metric_logger.log(total_steps, {f"eval/{metric}": value for metric, value in results[main]["metrics"].items()})

        validation = simulator_validation(state, results, seeds, sessions)
        targets = target_check(results, main)
        extra = {
            "ranker": main,
            "global_step": total_steps,
            "users_evaluated": info["users_evaluated"],
            "users_skipped": info["users_skipped"],
            "simulator_validation": validation,
            "recbole_metrics": {model: candidate_set.recbole_metrics for model, candidate_set in state.candidates.items()},
            "stages": {name: {"origin": stage.origin, "seconds": stage.seconds, **stage.info} for name, stage in state.stages.items()},
            "targets": targets,
            "evaluation_seconds": evaluation_seconds,
            "torch_threads": torch.get_num_threads(),
        }
        summary = metrics_summary(loaded, main, seed, sessions * len(seeds), results[main]["metrics"], results[main]["ci95"], baselines, extra)
        run_dir.write_metrics(summary)
        write_report(run_dir.path, report_sections(summary, results))
        return summary


def _stage(origin: str, seconds: float = 0.0) -> Any:
    from apps.recommendation.pipeline import Stage

    return Stage(origin, seconds)


def simulator_validation(state: PipelineState, results: dict[str, dict[str, Any]], seeds: list[int], sessions: int) -> dict[str, Any]:
    """Check the simulator: preference-model AUC on held-out items, and base vs random rankings.

    A valid simulator must rank the logged-data model clearly above a random ordering of the same
    candidates: ``base_beats_random`` holds when the 95% CI of the base ranking's simulated return
    lies wholly above the random ranking's. The first-slate CTR (one step per session) isolates the
    click model from session fatigue; its base/random ratio can be read against the held-out
    hit@10 ratio of the same two rankings.
    """
    first_slate = {name: float(np.mean([first_slate_ctr(state, name, sessions, seed) for seed in seeds])) for name in ("base", "random")}
    base, random = results["base"], results["random"]
    return {
        "preference_heldout_auc": float(state.stages["preference"].info["heldout_auc"]),
        "first_slate_ctr_base": first_slate["base"],
        "first_slate_ctr_random": first_slate["random"],
        "first_slate_ctr_ratio": first_slate["base"] / max(first_slate["random"], 1e-12),
        "heldout_hit@10_ratio": float(base["metrics"]["hit@10"]) / max(float(random["metrics"]["hit@10"]), 1e-12),
        "sim_ctr_base": float(base["metrics"]["sim_ctr"]),
        "sim_ctr_base_ci95": list(base["ci95"]["sim_ctr"]),
        "sim_ctr_random": float(random["metrics"]["sim_ctr"]),
        "sim_ctr_random_ci95": list(random["ci95"]["sim_ctr"]),
        "sim_return_base": float(base["metrics"]["sim_return_mean"]),
        "sim_return_base_ci95": list(base["ci95"]["sim_return_mean"]),
        "sim_return_random": float(random["metrics"]["sim_return_mean"]),
        "sim_return_random_ci95": list(random["ci95"]["sim_return_mean"]),
        "base_beats_random": bool(base["ci95"]["sim_return_mean"][0] > random["ci95"]["sim_return_mean"][1]),
    }


def first_slate_ctr(state: PipelineState, name: str, sessions: int, seed: int) -> float:
    """Return the CTR of the first slate of ``sessions`` new sessions under a ranker."""
    from apps.recommendation.pipeline import ranker_action

    env = state.make_env()
    act = ranker_action(state, name, np.random.default_rng(seed))
    clicks = shown = 0
    for episode in range(sessions):
        obs, _ = env.reset(seed=seed * 100_003 + episode)
        _, _, _, _, info = env.step(act(obs))
        clicks += int(info["clicks"].sum())
        shown += int(info["shown"])
    return clicks / max(shown, 1)


def target_check(results: dict[str, dict[str, Any]], main: str) -> dict[str, Any]:
    """Compare the RL re-ranker with the base ranking against the stated targets."""
    rl = results[main]["metrics"]
    base = results["base"]["metrics"]
    return_gain = (rl["sim_return_mean"] - base["sim_return_mean"]) / max(abs(base["sim_return_mean"]), 1e-12)
    ndcg_change = (rl["ndcg@10"] - base["ndcg@10"]) / max(abs(base["ndcg@10"]), 1e-12)
    return {
        "sim_return_gain_over_base": return_gain,
        "ndcg@10_change_vs_base": ndcg_change,
        "return_target_met": bool(return_gain >= 0.10),
        "ndcg_target_met": bool(ndcg_change >= -0.05),
    }


def _interval(value: float, ci95: list[float]) -> str:
    return f"{value:.4f} [{ci95[0]:.4f}, {ci95[1]:.4f}]"


def _cell(result: dict[str, Any], metric: str) -> str:
    value = result["metrics"][metric]
    low, high = result["ci95"][metric]
    return f"{value:.4f} [{low:.4f}, {high:.4f}]"


def report_sections(summary: dict[str, Any], results: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown sections for report.md: ranker comparison, simulator validation, base models, stages."""
    metrics = [*results[summary["ranker"]]["metrics"]]
    header = "| metric | " + " | ".join(results) + " |"
    lines = ["## Rankers compared", "", f"Mean over {len(next(iter(results.values()))['per_seed']['ndcg@10'])} seeds with bootstrap 95% CIs; offline metrics on the test split ({summary['users_evaluated']} users, {summary['users_skipped']} skipped without a test item), sim_* over simulated sessions.", "", header, "|" + "---|" * (len(results) + 1)]
    for metric in metrics:
        lines.append(f"| {metric} | " + " | ".join(_cell(result, metric) for result in results.values()) + " |")
    validation = summary["simulator_validation"]
    targets = summary["targets"]
    lines += [
        "",
        "## Simulator validation",
        "",
        f"- Preference model AUC on held-out test items vs random unseen items: {validation['preference_heldout_auc']:.4f}",
        f"- First-slate CTR (no fatigue yet) under the base ranking: {validation['first_slate_ctr_base']:.4f}; under a random ranking of the same candidates: {validation['first_slate_ctr_random']:.4f} (ratio {validation['first_slate_ctr_ratio']:.2f}; the held-out hit@10 ratio of the same two rankings is {validation['heldout_hit@10_ratio']:.2f})",
        f"- Session CTR under the base ranking: {_interval(validation['sim_ctr_base'], validation['sim_ctr_base_ci95'])}; under a random ranking: {_interval(validation['sim_ctr_random'], validation['sim_ctr_random_ci95'])}",
        f"- Return per session under the base ranking: {_interval(validation['sim_return_base'], validation['sim_return_base_ci95'])}; under a random ranking: {_interval(validation['sim_return_random'], validation['sim_return_random_ci95'])} (base above random with disjoint 95% CIs: {'yes' if validation['base_beats_random'] else 'no'})",
        "",
        "## Targets",
        "",
        f"- Simulated return per session vs base: {targets['sim_return_gain_over_base']:+.1%} (target >= +10%: {'met' if targets['return_target_met'] else 'not met'})",
        f"- NDCG@10 vs base: {targets['ndcg@10_change_vs_base']:+.1%} (target >= -5%: {'met' if targets['ndcg_target_met'] else 'not met'})",
        "",
        "## Base models (RecBole full-sort metrics)",
        "",
        "```json",
        json.dumps(summary["recbole_metrics"], indent=1),
        "```",
        "",
        "## Stages",
        "",
        "| stage | origin | seconds | details |",
        "|---|---|---|---|",
    ]
    for name, stage in summary["stages"].items():
        details = ", ".join(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}" for key, value in stage.items() if key not in ("origin", "seconds"))
        lines.append(f"| {name} | {stage['origin']} | {stage['seconds']:.1f} | {details} |")
    return ["\n".join(lines)]


def register() -> None:
    """Register the ``recommendation`` kind and the simulator env."""
    from apps.recommendation.simulator import register_env

    register_env()
    register_kind(RecommendationKind())
