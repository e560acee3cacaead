"""The ``suite`` kind: a list of scenarios run or evaluated in turn, with one combined report.

``scenarios/quickstart.yaml`` is a suite. Each entry names a scenario file (relative to the suite
file), whether to ``run`` it (train at the entry's budget, then evaluate) or ``eval`` its shipped
checkpoint, and optional ``--set`` overrides.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.errors import ScenarioError, ScenarioLabError, located
from shared.kinds import EvalOptions, RunOptions, ScenarioKind
from shared.registry import get_kind, register_kind
from shared.report import metrics_table
from shared.rundir import RunDir, atomic_write_bytes, atomic_write_json

logger = logging.getLogger("scenariolab.suite")


class SuiteEntry(BaseModel):
    """One scenario of a suite."""

    model_config = ConfigDict(extra="forbid")

    scenario: str
    mode: Literal["run", "eval"] = "run"
    budget: Literal["smoke", "default", "full"] = "smoke"
    episodes: int | None = Field(None, ge=1)
    set: list[str] = Field(default_factory=list)


class SuiteSettings(BaseModel):
    """The ``settings:`` of a suite scenario."""

    model_config = ConfigDict(extra="forbid")

    entries: list[SuiteEntry] = Field(min_length=1)


class SuiteKind(ScenarioKind):
    """Runs each entry in turn and writes ``report.md`` and ``suite.json`` with every entry's metrics."""

    name = "suite"
    domain = "suite"
    description = "A list of scenarios run or evaluated in turn, with one combined report."
    needs_agent = False
    settings_model = SuiteSettings

    def validate(self, loaded: Any) -> None:
        from shared.scenario import load_scenario

        for index, entry in enumerate(loaded.settings.entries):
            path = loaded.resolve_path(entry.scenario)
            if not path.exists():
                raise ScenarioError(located(str(loaded.source), f"settings.entries.{index}.scenario", f"file not found: {entry.scenario}"))
            load_scenario(str(path), entry.set)

    def run(self, loaded: Any, run_dir: RunDir, options: RunOptions) -> dict[str, Any]:
        from shared.scenario import load_scenario

        run_dir.write_scenario(loaded)
        entries = loaded.settings.entries
        results: list[dict[str, Any]] = []
        sections = [f"# {loaded.name}", "", loaded.scenario.description, ""]
        for index, entry in enumerate(entries, start=1):
            child = load_scenario(str(loaded.resolve_path(entry.scenario)), entry.set)
            kind = get_kind(child.scenario.kind, str(child.source))
            child_dir = RunDir.create(run_dir.path / "entries", child.name, child.scenario.seed)
            logger.info("[%d/%d] %s %s (%s)", index, len(entries), entry.mode, child.name, entry.budget if entry.mode == "run" else "shipped checkpoint")
            started = time.perf_counter()
            try:
                if entry.mode == "run":
                    summary = kind.run(child, child_dir, RunOptions(budget=entry.budget, seed=child.scenario.seed, progress=options.progress))
                else:
                    summary = kind.evaluate(child, child_dir, EvalOptions(episodes=entry.episodes))
            except ScenarioLabError as error:
                logger.error("[%d/%d] %s failed: %s", index, len(entries), child.name, error)
                summary = {"scenario": child.name, "error": str(error)}
            seconds = time.perf_counter() - started
            summary = {**summary, "mode": entry.mode, "seconds": round(seconds, 1), "run_dir": str(child_dir.path)}
            results.append(summary)
            sections += [f"## {child.name} ({entry.mode}, {seconds:.0f} s)", "", child.scenario.description.strip(), ""]
            if "error" in summary:
                sections += [f"Failed: {summary['error']}", ""]
            else:
                sections += [metrics_table(summary), "", f"Run folder: `{child_dir.path}`", ""]
        atomic_write_json(run_dir.path / "suite.json", {"scenario": loaded.name, "entries": results})
        atomic_write_bytes(run_dir.path / "report.md", "\n".join(sections).encode("utf-8"))
        failed = [r["scenario"] for r in results if "error" in r]
        if failed:
            raise ScenarioError(located(str(loaded.source), "settings.entries", f"{len(failed)} entries failed: {', '.join(failed)}; see {run_dir.path / 'report.md'}"))
        return {"scenario": loaded.name, "metrics": {}, "entries": len(results)}

    def evaluate(self, loaded: Any, run_dir: RunDir, options: EvalOptions) -> dict[str, Any]:
        raise ScenarioError(located(str(loaded.source), "kind", "a suite is run with `scenariolab run`, not evaluated"))


register_kind(SuiteKind())
