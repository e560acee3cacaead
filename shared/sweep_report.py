"""The sweep report: per-grid-point statistics over seeds with rliable's stratified bootstrap.

For each grid point the report gives the mean and the interquartile mean (IQM) of the final
evaluation metric over seeds, each with a 95% percentile-bootstrap CI. The seeds are resampled
within each grid point (rliable's stratified bootstrap, one stratum per point). It then gives the
probability of improvement between every pair of points, performance profiles, learning curves with
CI bands, robustness curves over ``perturb.*`` grid keys and bar charts. Method: Agarwal et al.
2021, "Deep Reinforcement Learning at the Edge of the Statistical Precipice"; the numbers come
from the ``rliable`` package (1.2.0).

``report.md`` links PNG files in ``report_plots/``; ``report.html`` embeds the same PNGs as base64, so
it can be mailed or archived as one file. Every table names the sweep command and git commit.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from shared.errors import ScenarioError, located
from shared.rundir import atomic_write_bytes

BOOTSTRAP_REPS = 2000
CURVE_BINS = 40
MAX_POI_CI_PAIRS = 28  # CIs for the probability of improvement cost one bootstrap per pair
LOWER_IS_BETTER = {"collision_rate", "cost_mean", "ttc_violation_rate", "headway_violation_rate", "offroad_rate", "jerk_mean"}
PRIMARY_METRICS = ("return_mean", "sim_return_mean", "ndcg@10", "success_rate")
# Safety metrics drawn beside the headline metric in the robustness curves when every finished
# trial reports them, because under a perturbation a driving agent can keep its return and still crash more.
ROBUSTNESS_SAFETY_METRICS = ("collision_rate", "cost_mean")


@dataclass
class GridPoint:
    """One grid point's label, its overrides and the final metrics of its finished seeds."""

    label: str
    point: dict[str, str]
    seeds: list[int] = field(default_factory=list)
    metrics: list[dict[str, float]] = field(default_factory=list)
    run_dirs: list[Path] = field(default_factory=list)
    baselines: dict[str, list[dict[str, float]]] = field(default_factory=dict)  # e.g. random, idm: metrics per seed

    def scores(self, metric: str) -> np.ndarray:
        values = [m.get(metric) for m in self.metrics]
        return np.array([v if isinstance(v, (int, float)) and v is not None else np.nan for v in values], dtype=np.float64)


# Statistics ----------------------------------------------------------------------------------------


def _rliable():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from rliable import library, metrics
    return library, metrics


def _interval_estimates(library: Any, score_dict: dict[str, Any], func: Any, reps: int, seed: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    # rliable 1.2.0 passes random_state to arch 7, which warns that the argument is deprecated.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return library.get_interval_estimates(score_dict, func, reps=reps, random_state=np.random.RandomState(seed))


def interval_estimates(scores: dict[str, np.ndarray], reps: int = BOOTSTRAP_REPS, seed: int = 0) -> dict[str, dict[str, float]]:
    """Return mean, IQM and their stratified-bootstrap 95% CIs for each ``(runs, tasks)`` score matrix.

    Each grid point is its own stratum: runs (seeds) are resampled with replacement within each task
    column, never across columns.
    """
    library, metrics = _rliable()

    def mean_and_iqm(matrix: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_mean(matrix), metrics.aggregate_iqm(matrix)])

    result: dict[str, dict[str, float]] = {}
    for name, matrix in scores.items():
        matrix = np.asarray(matrix, dtype=np.float64)
        matrix = matrix[~np.isnan(matrix).any(axis=1)]
        if matrix.shape[0] == 0:
            result[name] = {k: math.nan for k in ("mean", "mean_lo", "mean_hi", "iqm", "iqm_lo", "iqm_hi")}
            continue
        if matrix.shape[0] == 1 or np.all(matrix == matrix[0]):
            # Every resample equals the sample, so the interval has zero width (arch rejects constant data).
            estimate = mean_and_iqm(matrix)
            low = high = estimate
        else:
            point, interval = _interval_estimates(library, {name: matrix}, mean_and_iqm, reps, seed)
            estimate, low, high = point[name], interval[name][0], interval[name][1]
        result[name] = {
            "mean": float(estimate[0]), "mean_lo": float(low[0]), "mean_hi": float(high[0]),
            "iqm": float(estimate[1]), "iqm_lo": float(low[1]), "iqm_hi": float(high[1]),
        }
    return result


def probability_of_improvement(
    scores: dict[str, np.ndarray], reps: int = BOOTSTRAP_REPS, seed: int = 0, with_ci: bool = True
) -> list[tuple[str, str, float, float, float]]:
    """Return ``(x, y, P(X > Y), lo, hi)`` for every ordered-once pair of score matrices.

    P(X > Y) is the Mann-Whitney probability that a random run of X scores above a random run of Y
    (ties count one half), averaged over tasks, with a stratified-bootstrap 95% CI.
    """
    library, metrics = _rliable()
    names = [name for name, matrix in scores.items() if np.asarray(matrix).shape[0] > 0]
    rows = []
    for i, x in enumerate(names):
        for y in names[i + 1 :]:
            estimate = float(metrics.probability_of_improvement(scores[x], scores[y]))
            low = high = math.nan
            if with_ci:
                _, interval = _interval_estimates(library, {"pair": [scores[x], scores[y]]}, metrics.probability_of_improvement, reps, seed)
                low, high = (float(np.ravel(bound)[0]) for bound in interval["pair"])
            rows.append((x, y, estimate, low, high))
    return rows


def performance_profiles(scores: dict[str, np.ndarray], taus: np.ndarray, reps: int = BOOTSTRAP_REPS, seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Return the fraction of runs scoring above each threshold tau, with 95% CI bands."""
    library, _ = _rliable()
    usable = {name: matrix for name, matrix in scores.items() if matrix.shape[0] > 0}
    # rliable draws these resamples from numpy's global generator; seed it and restore it afterwards.
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        profiles, bands = library.create_performance_profile(usable, taus, reps=reps)
    finally:
        np.random.set_state(saved)
    return profiles, bands


def bootstrap_curve_band(curves: np.ndarray, reps: int = BOOTSTRAP_REPS, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the mean over seeds (rows) at each x, and a percentile-bootstrap 95% band over seeds.

    NaN entries (a seed with no finished episode yet) are left out of that column's mean.
    """
    rng = np.random.default_rng(seed)
    n = curves.shape[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(curves, axis=0)
        if n == 1:
            return mean, mean.copy(), mean.copy()
        picks = rng.integers(0, n, size=(reps, n))
        resampled = np.nanmean(curves[picks], axis=1)  # (reps, bins)
        low, high = np.nanquantile(resampled, [0.025, 0.975], axis=0)
    return mean, low, high


# Reading the sweep ---------------------------------------------------------------------------------


def load_sweep(sweep_dir: Path) -> tuple[dict[str, Any], list[GridPoint]]:
    """Read ``sweep.json`` and the metrics.json of every finished trial, grouped by grid point."""
    path = sweep_dir / "sweep.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ScenarioError(located(str(path), None, f"cannot read the sweep record ({error})")) from None
    points: dict[str, GridPoint] = {}
    for entry in record.get("trials", []):
        label = point_label(entry["point"])
        group = points.setdefault(label, GridPoint(label, entry["point"]))
        if entry.get("status") != "done":
            continue
        run_dir = sweep_dir / entry["run_dir"]
        metrics_path = run_dir / "metrics.json"
        baselines: dict[str, Any] = {}
        if metrics_path.exists():
            summary = json.loads(metrics_path.read_text(encoding="utf-8"))
            metrics = summary.get("metrics", {})
            baselines = summary.get("baselines") or {}
        else:
            metrics = entry.get("metrics", {})
        for name, baseline in baselines.items():
            if isinstance(baseline, dict) and isinstance(baseline.get("metrics"), dict):
                group.baselines.setdefault(name, []).append(baseline["metrics"])
        group.seeds.append(int(entry["seed"]))
        group.metrics.append(metrics)
        group.run_dirs.append(run_dir)
    return record, list(points.values())


def point_label(point: dict[str, str]) -> str:
    return ", ".join(f"{key}={value}" for key, value in point.items()) or "scenario defaults"


def choose_metric(points: list[GridPoint]) -> str | None:
    """Pick the headline metric: the first of the standard ones present, else the first ``*_mean``."""
    names: list[str] = []
    for group in points:
        for metrics in group.metrics:
            names.extend(k for k, v in metrics.items() if isinstance(v, (int, float)) and k not in names)
    for name in PRIMARY_METRICS:
        if name in names:
            return name
    return next((n for n in names if n.endswith("_mean")), names[0] if names else None)


def learning_curves(group: GridPoint, bins: np.ndarray, tag: str = "charts/episodic_return") -> np.ndarray:
    """Return one row per seed: the mean ``tag`` of the episodes ending in each global-step bin.

    A bin with no finished episode carries the previous bin's value forward; bins before a seed's
    first episode stay NaN.
    """
    from shared.logging import read_jsonl

    rows = []
    for run_dir in group.run_dirs:
        jsonl = run_dir / "metrics.jsonl"
        records = read_jsonl(jsonl) if jsonl.exists() else []
        steps = np.array([r["global_step"] for r in records if r.get(tag) is not None], dtype=np.float64)
        values = np.array([r[tag] for r in records if r.get(tag) is not None], dtype=np.float64)
        row = np.full(len(bins) - 1, np.nan)
        index = np.clip(np.digitize(steps, bins) - 1, 0, len(bins) - 2)
        last = np.nan
        for b in range(len(bins) - 1):
            inside = values[index == b]
            last = float(inside.mean()) if inside.size else last
            row[b] = last
        rows.append(row)
    return np.array(rows)


# Plots ---------------------------------------------------------------------------------------------


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _figure().close(fig)
    return buffer.getvalue()


def plot_learning_curves(points: list[GridPoint]) -> bytes | None:
    max_step = 0.0
    from shared.logging import read_jsonl

    for group in points:
        for run_dir in group.run_dirs:
            jsonl = run_dir / "metrics.jsonl"
            if jsonl.exists():
                steps = [r["global_step"] for r in read_jsonl(jsonl)]
                max_step = max(max_step, max(steps, default=0))
    if max_step <= 0:
        return None
    bins = np.linspace(0.0, max_step, CURVE_BINS + 1)
    centres = 0.5 * (bins[:-1] + bins[1:])
    plt = _figure()
    fig, ax = plt.subplots(figsize=(7, 4))
    for group in points:
        if not group.run_dirs:
            continue
        mean, low, high = bootstrap_curve_band(learning_curves(group, bins))
        line = ax.plot(centres, mean, label=f"{group.label} (n={len(group.run_dirs)})")[0]
        ax.fill_between(centres, low, high, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("global_step (environment steps)")
    ax.set_ylabel("charts/episodic_return")
    ax.set_title("Training return: mean over seeds, 95% bootstrap band")
    ax.legend(fontsize=7)
    return _png(fig)


def plot_bars(stats: dict[str, dict[str, float]], metric: str) -> bytes:
    plt = _figure()
    labels = list(stats)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(labels) + 2), 4))
    x = np.arange(len(labels))
    for offset, key, name in ((-0.2, "mean", "mean"), (0.2, "iqm", "IQM")):
        values = np.array([stats[label][key] for label in labels])
        low = values - np.array([stats[label][f"{key}_lo"] for label in labels])
        high = np.array([stats[label][f"{key}_hi"] for label in labels]) - values
        ax.bar(x + offset, values, width=0.4, yerr=[low, high], capsize=4, label=name)
    ax.set_xticks(x, labels, rotation=20, ha="right", fontsize=7)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per grid point with 95% CIs over seeds")
    ax.legend()
    return _png(fig)


def plot_profiles(profiles: dict[str, np.ndarray], bands: dict[str, np.ndarray], taus: np.ndarray, metric: str) -> bytes:
    plt = _figure()
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, profile in profiles.items():
        line = ax.plot(taus, profile, label=name)[0]
        ax.fill_between(taus, bands[name][0], bands[name][1], color=line.get_color(), alpha=0.2)
    ax.set_xlabel(f"threshold tau on {metric}")
    ax.set_ylabel(f"fraction of runs with {metric} > tau")
    ax.set_title("Performance profiles with 95% CI bands")
    ax.legend(fontsize=7)
    return _png(fig)


def plot_robustness(points: list[GridPoint], stats_by_metric: dict[str, dict[str, dict[str, float]]], key: str) -> bytes | None:
    """Plot each metric against the numeric grid key ``key``, one panel per metric and one line per value of the other keys."""
    lines: dict[str, list[tuple[float, str]]] = {}
    for group in points:
        if key not in group.point:
            continue
        try:
            level = float(group.point[key])
        except ValueError:
            return None
        others = point_label({k: v for k, v in group.point.items() if k != key})
        lines.setdefault(others, []).append((level, group.label))
    if not lines:
        return None
    plt = _figure()
    fig, axes = plt.subplots(1, len(stats_by_metric), figsize=(5 * len(stats_by_metric), 4), squeeze=False)
    for ax, (metric, stats) in zip(axes[0], stats_by_metric.items()):
        for name, items in lines.items():
            known = sorted((level, stats[label]) for level, label in items if label in stats)
            levels = np.array([level for level, _ in known])
            means = np.array([entry["mean"] for _, entry in known])
            line = ax.plot(levels, means, marker="o", label=name)[0]
            ax.fill_between(levels, [entry["mean_lo"] for _, entry in known], [entry["mean_hi"] for _, entry in known], color=line.get_color(), alpha=0.2)
        ax.set_xlabel(key)
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} (mean, 95% CI over seeds)", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


# Documents -----------------------------------------------------------------------------------------


class Document:
    """Report blocks rendered both as Markdown (with PNG links) and as one self-contained HTML page."""

    def __init__(self) -> None:
        self.blocks: list[tuple[str, Any]] = []

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("heading", (level, text)))

    def paragraph(self, text: str) -> None:
        self.blocks.append(("paragraph", text))

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        self.blocks.append(("table", (list(headers), [list(r) for r in rows])))

    def image(self, name: str, png: bytes, caption: str) -> None:
        self.blocks.append(("image", (name, png, caption)))

    def markdown(self) -> str:
        lines: list[str] = []
        for kind, value in self.blocks:
            if kind == "heading":
                lines += ["#" * value[0] + " " + value[1], ""]
            elif kind == "paragraph":
                lines += [value, ""]
            elif kind == "table":
                headers, rows = value
                lines.append("| " + " | ".join(headers) + " |")
                lines.append("|" + "|".join("---" for _ in headers) + "|")
                lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
                lines.append("")
            else:
                name, _, caption = value
                lines += [f"![{caption}](report_plots/{name})", ""]
        return "\n".join(lines)

    def html(self, title: str) -> str:
        parts = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{html.escape(title)}</title>",
            "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 1em}"
            "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
            "code{background:#f4f4f4;padding:1px 3px}img{max-width:100%}</style></head><body>",
        ]
        for kind, value in self.blocks:
            if kind == "heading":
                parts.append(f"<h{value[0]}>{_inline_html(value[1])}</h{value[0]}>")
            elif kind == "paragraph":
                parts.append(f"<p>{_inline_html(value)}</p>")
            elif kind == "table":
                headers, rows = value
                parts.append("<table><tr>" + "".join(f"<th>{_inline_html(h)}</th>" for h in headers) + "</tr>")
                parts += ["<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in row) + "</tr>" for row in rows]
                parts.append("</table>")
            else:
                _, png, caption = value
                encoded = base64.b64encode(png).decode("ascii")
                parts.append(f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{encoded}"><figcaption>{html.escape(caption)}</figcaption></figure>')
        parts.append("</body></html>")
        return "\n".join(parts)


def _inline_html(text: str) -> str:
    """Escape text and turn Markdown `code` spans into <code> elements."""
    pieces = html.escape(text).split("`")
    return "".join(f"<code>{piece}</code>" if i % 2 else piece for i, piece in enumerate(pieces))


def _fmt(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4g}"


def _provenance(record: dict[str, Any]) -> str:
    commits = sorted({entry.get("git_commit") for entry in record.get("trials", []) if entry.get("status") == "done" and entry.get("git_commit")})
    commit_text = f"`{record.get('git_commit', 'unknown')}`"
    if len(commits) > 1 or (commits and commits[0] != record.get("git_commit")):
        commit_text = ", ".join(f"`{c}`" for c in commits) + " (trials ran at different commits; see the trials table)"
    return f"Produced by `{record.get('command', 'unknown')}` at git commit {commit_text}."


# The report ----------------------------------------------------------------------------------------


def metric_rows(points: list[GridPoint]) -> list[list[str]]:
    """Rows (grid point, policy, metric, seeds, mean, CI) for every numeric final metric of the agent and its baselines."""
    rows = []
    for group in points:
        for policy, runs in [("agent", group.metrics), *sorted(group.baselines.items())]:
            names = sorted({k for m in runs for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
            scores = {name: np.array([[m.get(name, np.nan)] for m in runs], dtype=np.float64) for name in names}
            for name, stats in interval_estimates(scores).items():
                count = int(np.isfinite(scores[name][:, 0]).sum())
                rows.append([group.label, policy, name, str(count), _fmt(stats["mean"]), f"[{_fmt(stats['mean_lo'])}, {_fmt(stats['mean_hi'])}]"])
    return rows


def write_sweep_report(sweep_dir: Path | str) -> Path:
    """Aggregate a sweep folder into ``report.md`` and ``report.html``; return the Markdown path."""
    sweep_dir = Path(sweep_dir)
    record, points = load_sweep(sweep_dir)
    finished = [group for group in points if group.metrics]
    if not finished:
        raise ScenarioError(located(str(sweep_dir / "sweep.json"), "trials", "no finished trial to report on yet; run the sweep first"))
    metric = choose_metric(finished)
    provenance = _provenance(record)
    doc = Document()
    plots: dict[str, bytes] = {}
    title = f"Sweep report: {record.get('scenario', sweep_dir.name)}"
    doc.heading(title, 1)
    doc.paragraph(provenance)
    trials = record.get("trials", [])
    status_counts = {s: sum(t.get("status") == s for t in trials) for s in ("done", "failed", "pending", "running")}
    doc.paragraph(
        f"Scenario `{record.get('scenario_path')}`, budget `{record.get('budget')}`, seeds {record.get('seeds')}, "
        f"overrides {record.get('set') or 'none'}. Trials: {status_counts['done']} done, {status_counts['failed']} failed, "
        f"{status_counts['pending'] + status_counts['running']} not finished."
    )

    if metric is not None:
        sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
        scores = {group.label: group.scores(metric)[:, None] for group in finished}
        stats = interval_estimates(scores)
        direction = "lower is better" if sign < 0 else "higher is better"
        doc.heading(f"{metric} per grid point ({direction})")
        doc.paragraph(
            f"Final evaluation `{metric}` of each seed (metrics.json). CIs: 95% percentile bootstrap over seeds, "
            f"resampled within each grid point ({BOOTSTRAP_REPS} resamples, rliable). {provenance}"
        )
        doc.table(
            ["grid point", "seeds", "mean", "mean 95% CI", "IQM", "IQM 95% CI"],
            [
                [label, str(len(next(g for g in finished if g.label == label).metrics)), _fmt(s["mean"]), f"[{_fmt(s['mean_lo'])}, {_fmt(s['mean_hi'])}]", _fmt(s["iqm"]), f"[{_fmt(s['iqm_lo'])}, {_fmt(s['iqm_hi'])}]"]
                for label, s in stats.items()
            ],
        )
        plots["bars.png"] = plot_bars(stats, metric)
        doc.image("bars.png", plots["bars.png"], f"{metric}: mean and IQM per grid point with 95% CIs")

        if len(finished) > 1:
            signed = {label: sign * matrix for label, matrix in scores.items()}
            pairs = probability_of_improvement(signed, with_ci=len(finished) * (len(finished) - 1) // 2 <= MAX_POI_CI_PAIRS)
            doc.heading("Probability of improvement")
            doc.paragraph(
                f"P(X > Y): the probability that a random seed of X beats a random seed of Y on `{metric}` ({direction}; "
                f"ties count one half), with a 95% stratified-bootstrap CI. {provenance}"
            )
            doc.table(["X", "Y", "P(X > Y)", "95% CI"], [[x, y, _fmt(p), f"[{_fmt(lo)}, {_fmt(hi)}]"] for x, y, p, lo, hi in pairs])

            all_scores = np.concatenate([m[:, 0] for m in scores.values()])
            all_scores = all_scores[~np.isnan(all_scores)]
            if all_scores.size and all_scores.min() < all_scores.max():
                taus = np.linspace(all_scores.min(), all_scores.max(), 50)
                profiles, bands = performance_profiles({k: v[~np.isnan(v).any(axis=1)] for k, v in scores.items()}, taus)
                plots["profiles.png"] = plot_profiles(profiles, bands, taus, metric)
                doc.heading("Performance profiles")
                doc.paragraph(f"Fraction of seeds whose `{metric}` exceeds each threshold, with 95% CI bands. {provenance}")
                doc.image("profiles.png", plots["profiles.png"], f"Performance profiles of {metric}")

        perturbed = [key for key in record.get("grid", {}) if key.startswith("perturb.") and len(record["grid"][key]) > 1]
        if perturbed:
            stats_by_metric = {metric: stats}
            for extra in ROBUSTNESS_SAFETY_METRICS:
                if extra != metric and all(not np.isnan(group.scores(extra)).any() for group in finished):
                    stats_by_metric[extra] = interval_estimates({group.label: group.scores(extra)[:, None] for group in finished})
            metric_names = ", ".join(f"`{name}`" for name in stats_by_metric)
        for key in perturbed:
            png = plot_robustness(finished, stats_by_metric, key)
            if png is None:
                continue
            name = f"robustness_{key.replace('.', '_')}.png"
            plots[name] = png
            doc.heading(f"Robustness to {key}")
            doc.paragraph(f"{metric_names} against `{key}`, one line per value of the other grid keys; bands are 95% CIs over seeds. {provenance}")
            doc.table(
                ["grid point", *stats_by_metric],
                [[label, *(f"{_fmt(entries[label]['mean'])} [{_fmt(entries[label]['mean_lo'])}, {_fmt(entries[label]['mean_hi'])}]" for entries in stats_by_metric.values())] for label in stats],
            )
            doc.image(name, png, f"{', '.join(stats_by_metric)} against {key}")

        doc.heading("Every final metric per grid point")
        doc.paragraph(
            "Mean over seeds with a 95% stratified-bootstrap CI, for the agent and for each baseline the scenario "
            f"evaluates beside it (metrics.json `baselines`, run on the same seeds and episodes). {provenance}"
        )
        doc.table(["grid point", "policy", "metric", "seeds", "mean", "95% CI"], metric_rows(finished))

    curves = plot_learning_curves(finished)
    if curves is not None:
        plots["learning_curves.png"] = curves
        doc.heading("Learning curves")
        doc.paragraph(f"`charts/episodic_return` from each trial's metrics.jsonl, averaged in {CURVE_BINS} global_step bins; the band is a 95% bootstrap CI over seeds. {provenance}")
        doc.image("learning_curves.png", curves, "Training return per grid point")

    doc.heading("Trials")
    doc.table(
        ["trial", "grid point", "seed", "status", "attempts", "git commit", "error"],
        [[t["id"], point_label(t["point"]), str(t["seed"]), t.get("status", "?"), str(t.get("attempts", 0)), str(t.get("git_commit", "-"))[:12], t.get("error", "")] for t in trials],
    )

    for name, png in plots.items():
        atomic_write_bytes(sweep_dir / "report_plots" / name, png)
    markdown_path = sweep_dir / "report.md"
    atomic_write_bytes(markdown_path, doc.markdown().encode("utf-8"))
    atomic_write_bytes(sweep_dir / "report.html", doc.html(title).encode("utf-8"))
    return markdown_path
