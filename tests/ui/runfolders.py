"""Run folders written the way `scenariolab run` writes them, for the UI tests."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "streamlit_app.py")

# Final evaluation of a CartPole PPO run, with the values the tests look for.
SUMMARY = {
    "scenario": "cartpole_ppo",
    "domain": "classic",
    "agent": "ppo",
    "seed": 1,
    "episodes": 30,
    "metrics": {"return_mean": 187.5, "return_iqm": 192.0, "episode_length_mean": 187.5},
    "ci95": {"return_mean": [160.5, 200.0], "return_iqm": [170.0, 200.0], "episode_length_mean": [160.5, 200.0]},
    "baselines": {"random": {"return_mean": 22.25, "episode_length_mean": 22.25}},
}

CURVE = [
    {"global_step": 1000, "charts/episodic_return": 21.0, "losses/value_loss": 9.5},
    {"global_step": 2000, "charts/episodic_return": 74.0, "losses/value_loss": 6.0},
    {"global_step": 3000, "charts/episodic_return": 163.0, "losses/value_loss": 3.25},
]


def write_run(
    root: Path,
    scenario: str = "cartpole_ppo",
    folder: str = "20260101-120000-seed1",
    *,
    summary: dict | None = SUMMARY,
    curve: list[dict] | None = CURVE,
    checkpoint_step: int | None = 3000,
    report: str | None = "# Report\n\nPPO on CartPole-v1 reached the maximum return.\n",
) -> Path:
    """Create one run folder under ``root`` with the standard files; None leaves a file out."""
    path = root / scenario / folder
    path.mkdir(parents=True)
    (path / "scenario.yaml").write_text(f"name: {scenario}\ndomain: classic\nkind: gym\n", encoding="utf-8")
    if curve is not None:
        (path / "metrics.jsonl").write_text("".join(json.dumps(record) + "\n" for record in curve), encoding="utf-8")
    if summary is not None:
        (path / "metrics.json").write_text(json.dumps(summary), encoding="utf-8")
    if report is not None:
        (path / "report.md").write_text(report, encoding="utf-8")
    if checkpoint_step is not None:
        (path / "checkpoints").mkdir()
        (path / "checkpoints" / "latest.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
        (path / "checkpoints" / "latest.json").write_text(json.dumps({"format": "scenariolab-checkpoint", "global_step": checkpoint_step}), encoding="utf-8")
    return path
