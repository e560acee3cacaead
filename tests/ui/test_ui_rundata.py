"""Reading run folders: learning curves, metrics.json, checkpoints and reports, including broken files."""

from __future__ import annotations

import json
import math
from pathlib import Path

from tests.ui.runfolders import SUMMARY, write_run
from shared.ui import rundata


def problem_keys(problems: list[rundata.Problem]) -> list[str]:
    return [problem.key for problem in problems]


def test_list_run_folders_newest_first(tmp_path: Path) -> None:
    write_run(tmp_path, folder="20260101-120000-seed1")
    write_run(tmp_path, folder="20260103-090000-seed7")
    write_run(tmp_path, scenario="highway_ppo", folder="20260102-120000-seed0")
    (tmp_path / ".jobs").mkdir()
    (tmp_path / "cartpole_ppo" / "notes").mkdir()
    folders = rundata.list_run_folders(tmp_path)
    assert [folder.label for folder in folders] == [
        "cartpole_ppo/20260103-090000-seed7",
        "highway_ppo/20260102-120000-seed0",
        "cartpole_ppo/20260101-120000-seed1",
        "cartpole_ppo/notes",
    ]
    assert [folder.seed for folder in folders] == [7, 0, 1, None]


def test_curves_long_form(tmp_path: Path) -> None:
    path = write_run(tmp_path)
    curves, problems = rundata.read_learning_curves(path)
    assert problems == []
    returns = curves[curves["tag"] == "charts/episodic_return"]
    assert list(returns["global_step"]) == [1000, 2000, 3000]
    assert list(returns["value"]) == [21.0, 74.0, 163.0]
    assert sorted(curves["tag"].unique()) == ["charts/episodic_return", "losses/value_loss"]


def test_curves_skip_torn_last_line_silently(tmp_path: Path) -> None:
    path = write_run(tmp_path, curve=None)
    (path / "metrics.jsonl").write_text('{"global_step": 8, "x": 1.5}\n{"global_step": 16, "x": nul', encoding="utf-8")
    curves, problems = rundata.read_learning_curves(path)
    assert problems == []
    assert list(curves["value"]) == [1.5]


def test_curves_count_invalid_lines(tmp_path: Path) -> None:
    path = write_run(tmp_path, curve=None)
    lines = ['{"global_step": 8, "x": 1.5, "y": null}', "garbage", '{"x": 2.0}', '[1, 2]', '{"global_step": 16, "x": 2.5}']
    (path / "metrics.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    curves, problems = rundata.read_learning_curves(path)
    assert problem_keys(problems) == ["runs.problem.jsonl_bad_lines"]
    assert problems[0].kwargs() == {"count": "3"}
    # The null value of y is not a point of the curve.
    assert list(zip(curves["global_step"], curves["tag"], curves["value"])) == [(8, "x", 1.5), (16, "x", 2.5)]


def test_curves_missing_file(tmp_path: Path) -> None:
    curves, problems = rundata.read_learning_curves(write_run(tmp_path, curve=None))
    assert curves.empty
    assert problem_keys(problems) == ["runs.problem.no_jsonl"]


def test_summary_values_and_ci(tmp_path: Path) -> None:
    summary = rundata.read_summary(write_run(tmp_path))
    assert summary.problems == []
    assert summary.metrics["return_mean"] == 187.5
    assert summary.ci95["return_mean"] == (160.5, 200.0)
    assert summary.baselines == {"random": {"return_mean": 22.25, "episode_length_mean": 22.25}}
    assert summary.info == {"scenario": "cartpole_ppo", "domain": "classic", "agent": "ppo", "seed": 1, "episodes": 30}


def test_summary_nested_baseline_and_nulls(tmp_path: Path) -> None:
    data = dict(SUMMARY, metrics={"ndcg@10": 0.25, "elo": None}, ci95={"ndcg@10": [0.5, None]}, baselines={"popularity": {"metrics": {"ndcg@10": 0.125}}})
    summary = rundata.read_summary(write_run(tmp_path, summary=data))
    assert summary.metrics == {"ndcg@10": 0.25}
    assert summary.ci95 == {}
    assert summary.baselines == {"popularity": {"ndcg@10": 0.125}}


def test_summary_nested_per_ranker(tmp_path: Path) -> None:
    data = dict(
        SUMMARY,
        metrics={"sasrec": {"ndcg@10": 0.25, "hit@10": 0.5}, "sim_ctr": 0.125},
        ci95={"sasrec": {"ndcg@10": [0.125, 0.375]}},
        baselines={"popularity": {"metrics": {"sasrec": {"ndcg@10": 0.0625}}}},
    )
    summary = rundata.read_summary(write_run(tmp_path, summary=data))
    assert summary.metrics == {"sasrec/ndcg@10": 0.25, "sasrec/hit@10": 0.5, "sim_ctr": 0.125}
    assert summary.ci95 == {"sasrec/ndcg@10": (0.125, 0.375)}
    assert summary.baselines == {"popularity": {"sasrec/ndcg@10": 0.0625}}


def test_summary_corrupt_and_misshapen(tmp_path: Path) -> None:
    corrupt = write_run(tmp_path, summary=None)
    (corrupt / "metrics.json").write_text("{", encoding="utf-8")
    assert problem_keys(rundata.read_summary(corrupt).problems) == ["runs.problem.metrics_invalid"]

    misshapen = write_run(tmp_path, folder="20260102-000000-seed0", summary=None)
    (misshapen / "metrics.json").write_text(json.dumps([1, 2]), encoding="utf-8")
    assert problem_keys(rundata.read_summary(misshapen).problems) == ["runs.problem.metrics_shape"]

    missing = write_run(tmp_path, folder="20260103-000000-seed0", summary=None)
    assert problem_keys(rundata.read_summary(missing).problems) == ["runs.problem.no_metrics"]


def test_metrics_table_rows(tmp_path: Path) -> None:
    table = rundata.metrics_table(rundata.read_summary(write_run(tmp_path))).set_index("metric")
    assert list(table.index) == ["return_mean", "return_iqm", "episode_length_mean"]
    assert table.loc["return_iqm", "ci95_low"] == 170.0
    assert math.isnan(table.loc["return_iqm", "random"])


def test_comparison_table_cells() -> None:
    first = rundata.RunSummary(metrics={"ttc_violation_rate": 0.125, "cost_mean": 3.0}, ci95={"ttc_violation_rate": (0.0625, 0.1875)})
    second = rundata.RunSummary(metrics={"cost_mean": 1.5})
    table = rundata.comparison_table({"a": first, "b": second})
    assert table.loc["ttc_violation_rate", "a"] == "0.125 [0.0625, 0.1875]"
    assert table.loc["ttc_violation_rate", "b"] == ""
    assert table.loc["cost_mean", "b"] == "1.5"


def test_checkpoints_listing(tmp_path: Path) -> None:
    path = write_run(tmp_path, checkpoint_step=4096)
    (path / "checkpoints" / "best.safetensors").write_bytes(b"")
    (path / "checkpoints" / "broken.json").write_text("{", encoding="utf-8")
    (path / "checkpoints" / "broken.safetensors").write_bytes(b"")
    found = {checkpoint.stem: checkpoint for checkpoint in rundata.list_checkpoints(path)}
    assert sorted(found) == ["best", "broken", "latest"]
    assert (found["latest"].complete, found["latest"].global_step) == (True, 4096)
    assert found["best"].complete is False
    assert found["broken"].metadata_readable is False
    assert rundata.list_checkpoints(write_run(tmp_path, folder="20260105-000000-seed0", checkpoint_step=None)) == []


def test_split_report_and_links(tmp_path: Path) -> None:
    parts = rundata.split_report("# R\n![curve](plots/return.png)\ntext\n![x](../../secret.png)")
    assert parts == [("markdown", "# R\n"), ("image", "plots/return.png"), ("markdown", "\ntext\n"), ("image", "../../secret.png")]
    assert rundata.resolve_inside(tmp_path, "plots/return.png") == (tmp_path / "plots" / "return.png").resolve()
    assert rundata.resolve_inside(tmp_path, "../../secret.png") is None
    assert rundata.resolve_inside(tmp_path, "https://example.org/a.png") is None


def test_runs_dir_from_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SCENARIOLAB_RUNS_DIR", str(tmp_path))
    assert rundata.runs_dir() == tmp_path
    monkeypatch.delenv("SCENARIOLAB_RUNS_DIR")
    monkeypatch.chdir(tmp_path)
    assert rundata.runs_dir() == tmp_path / "runs"


def test_demote_headings_outside_code() -> None:
    text = "# Title\n## Part\n```\n# comment\n```\n###### deep\n#hashtag"
    assert rundata.demote_headings(text) == "### Title\n#### Part\n```\n# comment\n```\n###### deep\n#hashtag"


def test_curve_tail_reads_appended_lines(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    tail = rundata.CurveTail()
    assert tail.read(path).empty

    path.write_text('{"global_step": 8, "x": 1.0}\n{"global_step": 16, "x"', encoding="utf-8")
    assert list(tail.read(path)["global_step"]) == [8]

    with open(path, "a", encoding="utf-8") as file:
        file.write(': 2.0}\nnot json\n{"global_step": 24, "x": 3.0, "y": 4.0}\n')
    frame = tail.read(path)
    assert list(zip(frame["global_step"], frame["tag"], frame["value"])) == [(8, "x", 1.0), (16, "x", 2.0), (24, "x", 3.0), (24, "y", 4.0)]

    # A resumed run truncates the file, so the tail starts over.
    path.write_text('{"global_step": 8, "x": 5.0}\n', encoding="utf-8")
    assert list(tail.read(path)["value"]) == [5.0]
