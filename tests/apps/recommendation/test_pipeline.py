"""The recommendation kind end to end through the CLI, and its one-line errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from shared.errors import ScenarioError

ROOT = Path(__file__).resolve().parents[3]
SCENARIO = ROOT / "scenarios" / "recommendation" / "movielens_rl_rerank.yaml"
RANKER_METRICS = {"ndcg@10", "recall@10", "mrr@10", "hit@10", "coverage@10", "ild@10", "novelty@10", "sim_ctr", "sim_return_mean", "sim_session_length_mean"}


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shared.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_smoke_run_writes_run_folder(tmp_path):
    result = cli("run", str(SCENARIO), "--budget", "smoke", "--out", str(tmp_path), "--no-progress")
    assert result.returncode == 0, result.stderr[-2000:]
    (run,) = (tmp_path / "movielens_rl_rerank").iterdir()
    for name in ("scenario.yaml", "metrics.jsonl", "metrics.json", "report.md"):
        assert (run / name).is_file(), name
    for stem in ("candidates_bpr", "candidates_sasrec", "preference", "reranker_ppo", "reranker_reinforce_topk"):
        assert (run / "checkpoints" / f"{stem}.safetensors").is_file(), stem
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["domain"] == "recommendation"
    assert summary["agent"] == "reinforce_topk"
    assert set(summary["metrics"]) == RANKER_METRICS
    assert set(summary["baselines"]) == {"base", "random", "text_similarity", "ppo"}
    for baseline in summary["baselines"].values():
        assert set(baseline["metrics"]) == RANKER_METRICS
    assert summary["users_evaluated"] == 60
    # The scenario leaves torch_threads unset, so the kind trains and evaluates on one thread.
    assert summary["torch_threads"] == 1
    validation = summary["simulator_validation"]
    assert 0.5 < validation["preference_heldout_auc"] <= 1.0
    assert validation["sim_return_base"] == summary["baselines"]["base"]["metrics"]["sim_return_mean"]
    assert len(validation["sim_return_random_ci95"]) == 2
    assert isinstance(validation["base_beats_random"], bool)
    assert set(summary["recbole_metrics"]) == {"bpr", "sasrec"}
    assert "ndcg@10" in summary["recbole_metrics"]["bpr"]["test"]
    report = (run / "report.md").read_text()
    assert "## Rankers compared" in report
    assert "## Simulator validation" in report


@pytest.mark.parametrize(
    "override, expected",
    [
        ("settings.unknown_key=1", "settings.unknown_key: unknown key"),
        ("settings.data.field_separator=','", "separated by '\\t'"),
        ("settings.data.text_fields=[]", "needs at least one text field"),
        ("settings.data.dataset=missing", "missing.inter: atomic file not found"),
        ("settings.data.time_field=ts", "missing field(s) ts"),
    ],
)
def test_bad_scenario_input_raises_one_line(override, expected):
    from shared.scenario import load_scenario

    with pytest.raises(ScenarioError) as error:
        load_scenario(str(SCENARIO), [override], "smoke")
    message = str(error.value)
    assert expected in message
    assert "\n" not in message


def test_cli_reports_bad_input_with_exit_2(tmp_path):
    result = cli("run", str(SCENARIO), "--budget", "smoke", "--out", str(tmp_path), "--no-progress", "--set", "settings.data.text_fields=[]")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, result.stderr[-2000:]
    assert "needs at least one text field" in errors[0]
