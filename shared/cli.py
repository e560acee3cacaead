"""The ``scenariolab`` command line: list, validate, run, eval, report, sweep and demo.

User mistakes (``ScenarioLabError``) print one line on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, Sequence

from shared.errors import ScenarioError, ScenarioLabError, located

if TYPE_CHECKING:
    from shared.kinds import RunOptions, ScenarioKind
    from shared.scenario import LoadedScenario

logger = logging.getLogger("scenariolab")


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line with exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("scenariolab: %(message)s"))
    root = logging.getLogger("scenariolab")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


def _parse_perturb(items: Sequence[str]) -> dict[str, float]:
    perturb: dict[str, float] = {}
    for item in items:
        name, sep, level = item.partition("=")
        if not sep or not name:
            raise ScenarioError(located(None, "--perturb", f"expected NAME=LEVEL, got {item!r}"))
        try:
            perturb[name] = float(level)
        except ValueError:
            raise ScenarioError(located(None, f"--perturb {name}", f"level must be a number, got {level!r}")) from None
    return perturb


# Commands -----------------------------------------------------------------------------------------


def command_list(args: argparse.Namespace) -> int:
    from shared.scenario import find_scenario_files, read_with_extends

    files = find_scenario_files()
    if not files:
        print("no scenario files found under ./scenarios")
        return 0
    width = max(len(p.stem) for p in files)
    for path in files:
        try:
            raw = read_with_extends(path)
        except ScenarioLabError as error:
            print(f"{path.stem:<{width}}  (invalid: {error})")
            continue
        agent = raw.get("agent", {}).get("name", "-") if isinstance(raw.get("agent"), dict) else "-"
        description = str(raw.get("description", "")).strip().splitlines()[0] if raw.get("description") else ""
        print(f"{path.stem:<{width}}  {raw.get('domain', '?'):<14} {agent:<15} {description}")
    return 0


def command_validate(args: argparse.Namespace) -> int:
    from shared.scenario import read_with_extends, resolve_scenario_path, validate_raw

    failures = 0
    for item in args.paths:
        try:
            path = resolve_scenario_path(item)
            raw = read_with_extends(path)
        except ScenarioLabError as error:
            print(error, file=sys.stderr)
            failures += 1
            continue
        _, errors = validate_raw(raw, str(path))
        for line in errors:
            print(line, file=sys.stderr)
        if errors:
            failures += 1
        else:
            print(f"{path}: valid")
    return 2 if failures else 0


def _find_resume_dir(out: Path, scenario_name: str, explicit: str | None) -> Path:
    if explicit:
        path = Path(explicit)
        if not (path / "checkpoints" / "latest.json").exists():
            raise ScenarioError(located(str(path), "--resume", "no checkpoints/latest.json in this run folder"))
        return path
    candidates = sorted((out / scenario_name).glob("*/checkpoints/latest.json")) if (out / scenario_name).is_dir() else []
    if not candidates:
        raise ScenarioError(located(str(out / scenario_name), "--resume", "no earlier run of this scenario with a latest checkpoint"))
    return candidates[-1].parent.parent


def command_run(args: argparse.Namespace) -> int:
    from shared.kinds import RunOptions
    from shared.registry import get_kind
    from shared.rundir import RunDir, check_writable
    from shared.scenario import load_scenario

    loaded = load_scenario(args.scenario, args.set, args.budget)
    kind = get_kind(loaded.scenario.kind, str(loaded.source))
    seed = args.seed if args.seed is not None else loaded.scenario.seed
    out = Path(args.out)
    options = RunOptions(budget=args.budget, seed=seed, resume=args.resume is not None, progress=not args.no_progress, distributed=args.distributed)
    if args.distributed:
        return _run_distributed(args, loaded, kind, options)
    if args.lr_scaling is not None:
        raise ScenarioError(located(str(loaded.source), "--lr-scaling", "applies only with --distributed under torchrun; drop it for a single process"))
    if args.resume is not None:
        run_dir = RunDir(_find_resume_dir(out, loaded.name, args.resume or None))
        stored = (run_dir.path / "scenario.yaml").read_text(encoding="utf-8") if (run_dir.path / "scenario.yaml").exists() else None
        if stored is not None and stored != loaded.to_yaml():
            raise ScenarioError(located(str(run_dir.path / "scenario.yaml"), "--resume", "this run folder was made from different scenario settings; pass the same scenario and --set options"))
        logger.info("resuming %s", run_dir.path)
    else:
        check_writable(out)
        run_dir = RunDir.create(out, loaded.name, seed)
    logger.info("run folder: %s", run_dir.path)
    summary = _run_or_clean_up(run_dir, lambda: kind.run(loaded, run_dir, options), keep=args.resume is not None)
    if summary.get("interrupted"):
        print(f"interrupted at global_step {summary['global_step']}; resume with: scenariolab run {args.scenario} --resume {run_dir.path}")
        return 130
    _print_summary(summary, run_dir.path)
    return 0


def _run_distributed(args: argparse.Namespace, loaded: "LoadedScenario", kind: "ScenarioKind", options: "RunOptions") -> int:
    """Run one torchrun rank of ``run --distributed``: rank 0 creates and fills the run folder, other ranks write nothing."""
    from shared.distributed import init_distributed, shutdown
    from shared.kinds import GymKind
    from shared.rundir import RunDir, check_writable

    source = str(loaded.source)
    if args.resume is not None:
        raise ScenarioError(located(source, "--resume", "cannot be combined with --distributed; resume the run in a single process"))
    # Limitation: only kinds that train through the shared Gym pipeline know about ranks.
    if not isinstance(kind, GymKind) or type(kind).run is not GymKind.run:
        raise ScenarioError(located(source, "kind", f"--distributed supports kinds that train through the shared Gym pipeline, not {loaded.scenario.kind!r}"))
    context = init_distributed(loaded.scenario.device)
    try:
        loaded = _scale_learning_rate(args, loaded, context.world_size)
        if context.is_main:
            check_writable(Path(args.out))
            run_dir = RunDir.create(Path(args.out), loaded.name, options.seed)
            logger.info("run folder: %s (%d ranks)", run_dir.path, context.world_size)
        else:
            run_dir = RunDir(Path(args.out) / loaded.name / f"rank{context.rank}-not-written")
        summary = kind.run(loaded, run_dir, options)
    finally:
        shutdown()
    if context.is_main:
        if summary.get("interrupted"):
            print(f"interrupted at global_step {summary['global_step']}")
            return 130
        _print_summary(summary, run_dir.path)
    return 0


# Limitation: the linear rule has been measured with 2 ranks on CartPole only (docs/sweeps.md).
LR_SCALING = {"linear": float, "sqrt": math.sqrt, "none": lambda world_size: 1.0}


def _scale_learning_rate(args: argparse.Namespace, loaded: "LoadedScenario", world_size: int) -> "LoadedScenario":
    """Return the scenario with its learning rates multiplied for ``world_size`` ranks by the ``--lr-scaling`` rule.

    K ranks average K times the batch per update, so a run of the same budget makes K times fewer
    updates. The linear rule (Goyal et al. 2017, "Accurate, Large Minibatch SGD") multiplies the
    step size by K so that those updates cover the same distance. The run folder's scenario.yaml
    records the rates the ranks used.
    """
    from shared.scenario import load_scenario

    factor = LR_SCALING[args.lr_scaling or "linear"](world_size)
    if factor == 1.0:
        return loaded
    config = loaded.agent_config
    rates = {name: getattr(config, name) for name in ("learning_rate", "value_learning_rate") if hasattr(config, name)}
    overrides = [f"agent.{name}={rate * factor!r}" for name, rate in rates.items()]
    scaled = load_scenario(args.scenario, [*args.set, *overrides], args.budget)
    changes = ", ".join(f"{name} {rate:g} -> {rate * factor:g}" for name, rate in rates.items())
    logger.info("--lr-scaling %s for %d ranks: %s", args.lr_scaling or "linear", world_size, changes)
    return scaled


def _run_or_clean_up(run_dir, work, keep: bool) -> dict:
    """Run ``work``; on a user error, remove the new run folder unless it already contains a checkpoint to resume."""
    try:
        return work()
    except ScenarioLabError:
        if not keep and not (run_dir.path / "checkpoints" / "latest.json").exists():
            shutil.rmtree(run_dir.path, ignore_errors=True)
        raise


def _print_summary(summary: dict, run_path: Path) -> None:
    metrics = summary.get("metrics", {})
    shown = ", ".join(f"{k}={v:.4g}" for k, v in list(metrics.items())[:4] if isinstance(v, (int, float)))
    if shown:
        print(f"{summary.get('scenario')}: {shown}")
    report = run_path / "report.md"
    print(f"report: {report if report.exists() else run_path}")


def command_eval(args: argparse.Namespace) -> int:
    from shared.kinds import EvalOptions
    from shared.registry import get_kind
    from shared.rundir import RunDir
    from shared.scenario import load_scenario

    loaded = load_scenario(args.scenario, args.set)
    kind = get_kind(loaded.scenario.kind, str(loaded.source))
    perturb = _parse_perturb(args.perturb)
    kind.validate_perturb(perturb, str(loaded.source), "--perturb")
    checkpoint = Path(args.checkpoint) if args.checkpoint else None
    if checkpoint is not None and not checkpoint.with_suffix(".json").exists() and not Path(str(checkpoint) + ".json").exists() and not checkpoint.exists():
        raise ScenarioError(located(str(checkpoint), "--checkpoint", "checkpoint not found"))
    options = EvalOptions(
        checkpoint=checkpoint,
        episodes=args.episodes,
        seeds=args.seeds,
        perturb=perturb,
        random_baseline=not args.no_baseline,
    )
    run_dir = RunDir.create(Path(args.out), loaded.name, loaded.scenario.seed, stamp=None)
    summary = _run_or_clean_up(run_dir, lambda: kind.evaluate(loaded, run_dir, options), keep=False)
    _print_summary(summary, run_dir.path)
    return 0


def command_report(args: argparse.Namespace) -> int:
    from shared.report import write_report

    path = Path(args.path)
    if not path.is_dir():
        raise ScenarioError(located(str(path), None, "not a run folder (directory not found)"))
    if (path / "sweep.json").exists():
        from shared.sweep_report import write_sweep_report  # type: ignore[import-not-found]

        report = write_sweep_report(path)
    else:
        if not (path / "metrics.json").exists() and not (path / "metrics.jsonl").exists():
            raise ScenarioError(located(str(path), None, "not a run folder: no metrics.json or metrics.jsonl"))
        report = write_report(path)
    print(f"report: {report}")
    return 0


def command_sweep(args: argparse.Namespace) -> int:
    try:
        from shared.sweep import run_sweep  # type: ignore[import-not-found]
    except ImportError:
        raise ScenarioError("sweep: not available in this version of ScenarioLab") from None
    return run_sweep(args)


def command_demo(args: argparse.Namespace) -> int:
    app = Path(__file__).resolve().parents[1] / "streamlit_app.py"
    if not app.exists():
        raise ScenarioError(located(str(app), None, "the Streamlit app is not installed with this checkout"))
    command = [
        sys.executable, "-m", "streamlit", "run", str(app), "--server.port", str(args.port), "--server.address", args.address,
        "--browser.gatherUsageStats", "false", "--client.toolbarMode", "viewer",
    ]
    if args.headless:
        command += ["--server.headless", "true"]
    print(f"ScenarioLab demo: http://{args.address}:{args.port}", flush=True)
    return subprocess.call(command, cwd=app.parent)


# Parser -------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="scenariolab", description="Run reinforcement-learning scenarios from YAML files.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    listing = commands.add_parser("list", help="list scenarios with domain, agent and description")
    listing.set_defaults(func=command_list)

    validate = commands.add_parser("validate", help="validate scenario files; exit 2 with one line per error")
    validate.add_argument("paths", nargs="+", metavar="SCENARIO")
    validate.set_defaults(func=command_validate)

    run = commands.add_parser("run", help="train (unless the scenario sets train: false), evaluate and write a run folder")
    run.add_argument("scenario", metavar="SCENARIO", help="a scenario file or a name from `scenariolab list`")
    run.add_argument("--seed", type=int, help="training seed (default: the scenario's)")
    run.add_argument("--out", default="runs", help="root folder for run folders (default: runs)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field by its dotted path, e.g. agent.learning_rate=3e-4")
    run.add_argument("--budget", choices=["smoke", "default", "full"], default="default", help="training budget level (default: default)")
    run.add_argument("--resume", nargs="?", const="", default=None, metavar="RUN_DIR", help="continue the latest run of this scenario (or RUN_DIR) from its latest checkpoint")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    run.add_argument("--distributed", action="store_true", help="data-parallel training under torchrun")
    run.add_argument(
        "--lr-scaling", choices=sorted(LR_SCALING), default=None,
        help="with --distributed: multiply the learning rate by the number of ranks (linear, the default), by its square root, or not at all",
    )
    run.set_defaults(func=command_run)

    evaluate = commands.add_parser("eval", help="evaluate a checkpoint and write metrics.json")
    evaluate.add_argument("scenario", metavar="SCENARIO")
    evaluate.add_argument("--checkpoint", help="checkpoint stem or .json/.safetensors path (default: the scenario's shipped checkpoint)")
    evaluate.add_argument("--episodes", type=int, help="episodes per seed")
    evaluate.add_argument("--seeds", type=int, nargs="+", help="evaluation seeds")
    evaluate.add_argument("--perturb", action="append", default=[], metavar="NAME=LEVEL", help="apply a perturbation at a level")
    evaluate.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    evaluate.add_argument("--out", default="runs", help="root folder for the evaluation's run folder")
    evaluate.add_argument("--no-baseline", action="store_true", help="skip the random-policy baseline")
    evaluate.set_defaults(func=command_eval)

    report = commands.add_parser("report", help="write report.md for a run (or sweep) folder")
    report.add_argument("path", metavar="RUN_OR_SWEEP_DIR")
    report.set_defaults(func=command_report)

    sweep = commands.add_parser("sweep", help="run seeds x grid points of a scenario as Ray tasks")
    sweep.add_argument("scenario", metavar="SCENARIO")
    sweep.add_argument("--seeds", type=int, default=5, help="seeds per grid point, counting up from the scenario's seed (default: 5)")
    sweep.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2", help="a dotted field path and its values, e.g. perturb.obs_noise=0,0.05; repeat for more keys")
    sweep.add_argument("--address", default=None, metavar="HOST:PORT", help="join this Ray cluster (default: start a local Ray)")
    sweep.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs Ray reserves for each trial (default: 1)")
    sweep.add_argument("--budget", choices=["smoke", "default", "full"], default="default")
    sweep.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field in every trial")
    sweep.add_argument("--out", default=None, metavar="SWEEP_DIR", help="the sweep folder; running the same command again resumes it (default: runs/sweeps/<scenario>)")
    sweep.set_defaults(func=command_sweep)

    demo = commands.add_parser("demo", help="start the Streamlit demo")
    demo.add_argument("--port", type=int, default=8501)
    demo.add_argument("--address", default="127.0.0.1")
    demo.add_argument("--headless", action="store_true", help="do not open a browser")
    demo.set_defaults(func=command_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``scenariolab`` console script."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except ScenarioLabError as error:
        print(f"scenariolab: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("scenariolab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
