"""Train-then-evaluate for single-agent Gymnasium scenarios (``GymKind`` and its app subclasses)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from shared.checkpoints import load_agent
from shared.errors import CheckpointError, ScenarioError, located
from shared.evaluation import agent_policy, evaluate_policy, random_policy, summarize
from shared.logging import MetricLogger
from shared.rollout import VectorCollector
from shared.rundir import RunDir, metrics_summary
from shared.training import Trainer, seed_everything

if TYPE_CHECKING:
    from shared.agents.base import Agent
    from shared.kinds import EvalOptions, GymKind, RunOptions
    from shared.scenario import LoadedScenario

logger = logging.getLogger("scenariolab.pipeline")


def configure_torch(loaded: "LoadedScenario", image_observations: bool) -> None:
    """Set deterministic CPU kernels and the thread count (1 for small MLPs, where threads only add overhead)."""
    scenario = loaded.scenario
    if scenario.deterministic_torch:
        torch.use_deterministic_algorithms(True, warn_only=True)
    threads = scenario.torch_threads
    if threads is None:
        threads = 0 if image_observations else 1  # 0 keeps torch's default (all cores)
    if threads > 0:
        torch.set_num_threads(threads)


def evaluate_agent(
    kind: "GymKind",
    loaded: "LoadedScenario",
    agent: "Agent",
    episodes: int,
    seeds: list[int],
    perturb: dict[str, float] | None = None,
    random_baseline: bool = True,
) -> dict[str, Any]:
    """Evaluate ``agent`` (and optionally a random policy) and return metrics, CIs and baselines."""
    evaluation = loaded.scenario.evaluation
    perturb = perturb if perturb is not None else dict(loaded.scenario.perturb)

    def make_env(seed: int):
        return kind.make_env(loaded, seed=seed, perturb=perturb, training=False)

    per_episode = evaluate_policy(make_env, agent_policy(agent, evaluation.deterministic), lambda: kind.episode_tracker(loaded), episodes, seeds)
    result = summarize(per_episode, evaluation.bootstrap_samples, loaded.scenario.seed)
    result["baselines"] = {}
    if random_baseline:

        def make_baseline_env(seed: int):
            return kind.make_baseline_env(loaded, seed=seed, perturb=perturb)

        probe = make_baseline_env(seeds[0])
        action_space = probe.action_space
        probe.close()
        baseline = evaluate_policy(make_baseline_env, random_policy(action_space, loaded.scenario.seed), lambda: kind.episode_tracker(loaded), episodes, seeds)
        random_summary = summarize(baseline, evaluation.bootstrap_samples, loaded.scenario.seed)
        result["baselines"]["random"] = {"metrics": random_summary["metrics"], "ci95": random_summary["ci95"]}
    return result


def run_gym_scenario(kind: "GymKind", loaded: "LoadedScenario", run_dir: RunDir, options: "RunOptions") -> dict[str, Any]:
    """Train the scenario's agent within the chosen budget, evaluate it and write the run folder."""
    from shared.networks import is_image_space
    from shared.report import write_report

    scenario = loaded.scenario
    seed = options.seed if options.seed is not None else scenario.seed
    total_steps = scenario.steps_for(options.budget) if scenario.train else 0

    # Under torchrun (--distributed) each rank steps its own env.num_envs envs with its own seeds and
    # collects an equal share of the budget, and only rank 0 writes to the run folder. In a single
    # process rank is 0 and world_size 1.
    context = None
    if options.distributed:
        from shared.distributed import current_context, rank_budget, rank_seed

        context = current_context()
    rank = context.rank if context else 0
    world_size = context.world_size if context else 1
    is_main = rank == 0
    rank_seed_value = rank_seed(seed, rank) if context else seed
    if context:
        total_steps = rank_budget(total_steps, world_size)

    seed_everything(rank_seed_value)
    if not options.resume and is_main:
        run_dir.write_scenario(loaded)

    envs = kind.make_vector_env(loaded, rank_seed_value)
    configure_torch(loaded, is_image_space(envs.single_observation_space))
    agent = kind.build_agent(loaded, envs, total_steps, rank_seed_value)
    if scenario.checkpoint_path and (scenario.warm_start or total_steps == 0) and not options.resume:
        load_agent(agent, loaded.resolve_path(scenario.checkpoint_path), weights_only=True)
    if context:
        from shared.distributed import broadcast_agent

        broadcast_agent(agent)
    if scenario.compile:
        agent.compile()

    result = None
    started = time.perf_counter()
    if total_steps > 0:
        collector = VectorCollector(envs, rank_seed_value)
        checkpoint_dir = run_dir.checkpoints if is_main else run_dir.path / "checkpoints"
        latest = checkpoint_dir / "latest"
        resume_step = None
        if options.resume:
            if not latest.with_suffix(".json").exists():
                raise CheckpointError(f"{latest}.json: --resume: no latest checkpoint in this run folder")
            from shared.checkpoints import load_checkpoint

            resume_step = int(load_checkpoint(latest)[1]["global_step"])
        trainer_class = Trainer
        if context is None:
            metric_logger = MetricLogger(run_dir.path, scenario.logging.tensorboard, resume_step=resume_step)
        else:
            from shared.distributed import NullMetricLogger, SilentTrainer, WorldMetricLogger

            metric_logger = WorldMetricLogger(run_dir.path, world_size, scenario.logging.tensorboard) if is_main else NullMetricLogger()
            trainer_class = Trainer if is_main else SilentTrainer
        evaluation = scenario.evaluation

        def periodic_eval(current: "Agent") -> dict[str, float]:
            summary = evaluate_agent(kind, loaded, current, evaluation.interval_episodes, evaluation.seeds[:1], random_baseline=False)
            return summary["metrics"]

        trainer = trainer_class(
            agent,
            collector,
            metric_logger,
            checkpoint_dir,
            total_steps,
            evaluate=periodic_eval if is_main else None,
            eval_interval=evaluation.interval,
            checkpoint_interval=scenario.checkpoint.interval,
            log_interval=scenario.logging.interval,
            progress=options.progress and is_main,
            save_replay_buffer=scenario.checkpoint.save_replay_buffer,
            metadata={"scenario": scenario.name, "kind": scenario.kind, "env_id": scenario.env.id if scenario.env else None, "seed": seed, "world_size": world_size},
        )
        if options.resume:
            trainer.restore(latest)
        try:
            result = trainer.train()
        finally:
            metric_logger.close()
            envs.close()
        if result.interrupted:
            return {"interrupted": True, "global_step": result.global_step * world_size, "checkpoint": str(result.latest)}
    else:
        envs.close()
        if not scenario.checkpoint_path:
            raise ScenarioError(located(str(loaded.source), "checkpoint_path", "the scenario trains nothing (train: false or a zero budget), so it needs a checkpoint to evaluate"))

    if not is_main:
        return {"rank": rank, "train_steps": result.global_step if result else 0}

    evaluation = scenario.evaluation
    summary = evaluate_agent(kind, loaded, agent, evaluation.episodes, evaluation.seeds, random_baseline=evaluation.random_baseline)
    metrics = metrics_summary(
        loaded,
        agent.name,
        seed,
        summary["episodes"],
        summary["metrics"],
        summary["ci95"],
        summary["baselines"],
        extra={
            "budget": options.budget,
            "train_steps": result.global_step * world_size if result else 0,
            "train_seconds": round(time.perf_counter() - started, 2),
            "checkpoint": str(run_dir.checkpoints / "latest") if result else str(loaded.resolve_path(scenario.checkpoint_path or "")),
            "perturb": dict(scenario.perturb),
            **({"world_size": world_size} if context else {}),
        },
    )
    run_dir.write_metrics(metrics)
    write_report(run_dir.path)
    return metrics


def evaluate_gym_scenario(kind: "GymKind", loaded: "LoadedScenario", run_dir: RunDir, options: "EvalOptions") -> dict[str, Any]:
    """Evaluate a checkpoint (the given one, or the scenario's shipped one) and write metrics.json."""
    from shared.report import write_report

    scenario = loaded.scenario
    source = str(loaded.source)
    checkpoint = options.checkpoint or (loaded.resolve_path(scenario.checkpoint_path) if scenario.checkpoint_path else None)
    if checkpoint is None:
        raise ScenarioError(located(source, "--checkpoint", "required: the scenario ships no checkpoint_path"))
    perturb = {**scenario.perturb, **options.perturb}
    kind.validate_perturb(perturb, source, "--perturb")
    seed_everything(scenario.seed)
    env = kind.make_env(loaded, seed=scenario.seed, training=False)
    from shared.networks import is_image_space

    configure_torch(loaded, is_image_space(env.observation_space))
    agent = kind.build_agent(loaded, env, 0, scenario.seed)
    env.close()
    metadata = load_agent(agent, Path(checkpoint), weights_only=True)
    if metadata.get("scenario") not in (None, scenario.name) and metadata.get("env_id") not in (None, scenario.env.id if scenario.env else None):
        raise CheckpointError(f"{checkpoint}: env_id: checkpoint was trained on {metadata.get('env_id')!r}, the scenario uses {scenario.env.id if scenario.env else None!r}")
    run_dir.write_scenario(loaded)
    episodes = options.episodes or scenario.evaluation.episodes
    seeds = options.seeds or scenario.evaluation.seeds
    summary = evaluate_agent(kind, loaded, agent, episodes, seeds, perturb, options.random_baseline and scenario.evaluation.random_baseline)
    metrics = metrics_summary(
        loaded, agent.name, scenario.seed, summary["episodes"], summary["metrics"], summary["ci95"], summary["baselines"],
        extra={"checkpoint": str(checkpoint), "perturb": perturb},
    )
    run_dir.write_metrics(metrics)
    write_report(run_dir.path)
    return metrics
