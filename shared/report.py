"""``report.md`` for a run folder: the learning curve (PNG) and the evaluation table with CIs and baselines."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from shared.logging import read_jsonl
from shared.rundir import atomic_write_bytes


def format_value(value: Any, ci: list[float] | None = None) -> str:
    """Format a metric with its CI as ``12.3 [10.1, 14.0]``; missing values print as n/a."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    text = f"{value:.4g}" if isinstance(value, (int, float)) else str(value)
    if ci and all(isinstance(c, (int, float)) and not math.isnan(c) for c in ci):
        text += f" [{ci[0]:.4g}, {ci[1]:.4g}]"
    return text


def metrics_table(summary: dict[str, Any]) -> str:
    """Build a markdown table with one row per metric and the agent and each baseline as columns."""
    metrics = summary.get("metrics", {})
    ci95 = summary.get("ci95", {})
    baselines = summary.get("baselines", {})
    header = ["metric", str(summary.get("agent", "agent")), *baselines]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, value in metrics.items():
        row = [name, format_value(value, ci95.get(name))]
        for baseline in baselines.values():
            row.append(format_value(baseline.get("metrics", {}).get(name), baseline.get("ci95", {}).get(name)))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def plot_curve(records: list[dict[str, Any]], tag: str, path: Path, title: str) -> bool:
    """Plot ``tag`` against global_step (raw points and a moving average) into a PNG; False if no data."""
    points = [(r["global_step"], r[tag]) for r in records if r.get(tag) is not None]
    if not points:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    steps, values = map(np.asarray, zip(*points))
    figure, axis = plt.subplots(figsize=(6, 3.5), dpi=100)
    axis.plot(steps, values, ".", alpha=0.3, markersize=3, label=tag)
    window = max(len(values) // 20, 1)
    if window > 1:
        smooth = np.convolve(values, np.ones(window) / window, mode="valid")
        axis.plot(steps[window - 1 :], smooth, "-", linewidth=2, label=f"moving average ({window})")
    axis.set_xlabel("global_step")
    axis.set_ylabel(tag)
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(loc="best", fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return True


def write_report(run_path: Path | str, extra_sections: list[str] | None = None) -> Path:
    """Write ``report.md`` (and ``learning_curve.png`` when there is training data) in a run folder."""
    run_path = Path(run_path)
    summary: dict[str, Any] = {}
    if (run_path / "metrics.json").exists():
        summary = json.loads((run_path / "metrics.json").read_text(encoding="utf-8"))
    lines = [f"# {summary.get('scenario', run_path.name)}", ""]
    if summary:
        lines += [
            f"Agent `{summary.get('agent')}`, seed {summary.get('seed')}, {summary.get('episodes')} evaluation episodes. "
            "Brackets give bootstrap 95% confidence intervals.",
            "",
        ]
    records = read_jsonl(run_path / "metrics.jsonl") if (run_path / "metrics.jsonl").exists() else []
    if plot_curve(records, "charts/episodic_return", run_path / "learning_curve.png", "Training episodic return"):
        lines += ["## Learning curve", "", "![learning curve](learning_curve.png)", ""]
    if plot_curve(records, "safety/episodic_cost", run_path / "cost_curve.png", "Training episodic cost"):
        lines += ["![cost curve](cost_curve.png)", ""]
    if summary.get("metrics"):
        lines += ["## Evaluation", "", metrics_table(summary), ""]
    for section in extra_sections or []:
        lines += [section, ""]
    path = run_path / "report.md"
    atomic_write_bytes(path, "\n".join(lines).encode("utf-8"))
    return path
