"""Driving scenario files: bad input is rejected with exit status 2, and each scenario runs end to end."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from shared.cli import main
from shared.errors import ScenarioError
from tests.apps.driving.helpers import SCENARIOS, load
from tests.conftest import scenariolab_command

SCENARIO_NAMES = sorted(path.stem for path in SCENARIOS.glob("*.yaml"))

BAD_OVERRIDES = {
    "env.config.vehicle_count=10": "env.config.vehicle_count: unknown value 'vehicle_count'",
    "env.id=highway-fastt-v0": "env.id: unknown value 'highway-fastt-v0'",
    "env.config.observation.type=Kinematic": "env.config.observation.type: unknown value 'Kinematic'",
    "env.config.observation.vehicle_count=5": "env.config.observation.vehicle_count: unknown value",
    "settings.cost.ttc_threshold_s=-1.5": "settings.cost.ttc_threshold_s: Input should be greater than 0",
    "settings.shield.ttc_threshold_s=0": "settings.shield.ttc_threshold_s: Input should be greater than 0",
    "perturb.density=3.0": "perturb.density: level 3.0 is out of range; allowed: 0.5 to 2.0",
    "perturb.obs_noise=-0.1": "perturb.obs_noise: level -0.1 is out of range",
    "perturb.action_delay=0.5": "perturb.action_delay: level 0.5 is not allowed; allowed: 0 or 1",
    "perturb.wind=0.1": "perturb.wind: unknown value 'wind'",
}


def test_every_scenario_validates():
    for name in SCENARIO_NAMES:
        loaded = load(name)
        assert loaded.scenario.domain == "driving"


@pytest.mark.parametrize("override", sorted(BAD_OVERRIDES))
def test_bad_override_raises_scenario_error(override):
    with pytest.raises(ScenarioError) as caught:
        load("highway_safe_ppo", override)
    message = str(caught.value)
    assert "\n" not in message
    assert "highway_safe_ppo.yaml" in message
    assert BAD_OVERRIDES[override] in message


def test_shield_needs_discrete_meta_actions():
    with pytest.raises(ScenarioError, match="settings.shield.enabled: the shield needs DiscreteMetaAction"):
        load("racetrack_ppo", "settings.shield.enabled=true")


def test_observation_perturbation_needs_kinematics():
    with pytest.raises(ScenarioError, match="perturb.obs_noise: needs a Kinematics observation"):
        load("racetrack_ppo", "perturb.obs_noise=0.1")


def test_cli_exit_2_on_bad_files(tmp_path):
    bad = {
        "unknown_key.yaml": {"env": {"config": {"lanes": 3}}},
        "unknown_env.yaml": {"env": {"id": "highway-fats-v0"}},
        "negative_ttc.yaml": {"settings": {"cost": {"ttc_threshold_s": -1}}},
        "perturb_range.yaml": {"perturb": {"aggressive": 1.5}},
    }
    paths = []
    for file_name, body in bad.items():
        path = tmp_path / file_name
        path.write_text(json.dumps({"extends": str(SCENARIOS / "highway_ppo.yaml"), **body}), encoding="utf-8")
        paths.append(str(path))
    result = subprocess.run([*scenariolab_command(), "validate", *paths], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    output = result.stderr + result.stdout
    for file_name in bad:
        assert file_name in output, (file_name, output)


def test_cli_eval_rejects_bad_perturbation(tmp_path):
    code = main(["eval", str(SCENARIOS / "highway_ppo.yaml"), "--perturb", "density=5", "--out", str(tmp_path), "--episodes", "1"])
    assert code == 2


SMOKE_SETTINGS = [
    "env.num_envs=1",
    "evaluation.episodes=1",
    "evaluation.seeds=[7]",
    "evaluation.random_baseline=false",
]


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in SCENARIO_NAMES if n != "highway_robustness"])
def test_scenario_smoke_run(name, tmp_path):
    extra = ["agent.num_steps=16", "budget.smoke=16"] if "dqn" not in name else ["agent.learning_starts=8", "budget.smoke=16"]
    # The IDM baseline costs one more evaluation, so only the plain highway scenario checks it.
    extra.append(f"settings.idm_baseline={str(name == 'highway_ppo').lower()}")
    arguments = ["run", str(SCENARIOS / f"{name}.yaml"), "--budget", "smoke", "--out", str(tmp_path), "--no-progress"]
    for setting in SMOKE_SETTINGS + extra:
        arguments += ["--set", setting]
    assert main(arguments) == 0
    metrics_files = list(Path(tmp_path).rglob("metrics.json"))
    assert len(metrics_files) == 1
    summary = json.loads(metrics_files[0].read_text(encoding="utf-8"))
    for key in ("collision_rate", "cost_mean", "min_ttc_mean", "speed_mean", "progress_m_mean", "return_mean"):
        assert key in summary["metrics"], key
    assert summary["metrics"]["progress_m_mean"] > 0
    if name.startswith(("merge", "intersection")):
        assert "success_rate" in summary["metrics"]
    if name == "highway_ppo":
        assert "collision_rate" in summary["baselines"]["idm"]["metrics"]


@pytest.mark.slow
def test_robustness_scenario_run(tmp_path):
    arguments = ["run", str(SCENARIOS / "highway_robustness.yaml"), "--out", str(tmp_path), "--no-progress"]
    for setting in (
        "settings.robustness.episodes=1",
        "settings.robustness.seeds=[3]",
        "settings.robustness.levels={density: [1.0, 2.0], action_delay: [1]}",
        "env.config.duration=4",
    ):
        arguments += ["--set", setting]
    assert main(arguments) == 0
    run_folder = next(Path(tmp_path).rglob("robustness.json")).parent
    assert (run_folder / "robustness_density_return_mean.png").exists()
    assert (run_folder / "robustness_action_delay_collision_rate.png").exists()
    report = (run_folder / "report.md").read_text(encoding="utf-8")
    assert "| idm |" in report
    assert "| ppo_lagrangian+shield |" in report
    assert "| random+shield |" in report
