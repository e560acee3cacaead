"""Bad input gets one line naming the file, the field and what is allowed, with exit status 2."""

import json
import subprocess

import pytest

from tests.conftest import scenariolab_command

SCENARIO = "scenarios/classic/cartpole_ppo.yaml"


def run_cli(args, repo_root, timeout=300):
    return subprocess.run([*scenariolab_command(), *args], cwd=repo_root, capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["run", "missing.yaml"], ["missing.yaml", "file not found"]),
        (["run", SCENARIO, "--set", "agent.learnin_rate=1e-3"], [SCENARIO, "agent.learnin_rate", "unknown key", "Did you mean 'learning_rate'"]),
        (["run", SCENARIO, "--set", "agnet.name=ppo"], [SCENARIO, "agnet", "Did you mean 'agent'"]),
        (["run", SCENARIO, "--set", "agent.learning_rate=fast"], [SCENARIO, "agent.learning_rate", "valid number", "'fast'"]),
        (["run", SCENARIO, "--set", "agent.name=ppx"], [SCENARIO, "agent.name", "unknown value 'ppx'", "Did you mean 'ppo'"]),
        (["run", SCENARIO, "--set", "env.id=CartPole-v9"], [SCENARIO, "env.id", "unknown value 'CartPole-v9'", "Did you mean 'CartPole-v1'"]),
        (["run", SCENARIO, "--set", "budget.smoke=-5"], [SCENARIO, "budget.smoke", "greater than or equal to 0"]),
        (["run", SCENARIO, "--set", "env.num_envs=zero"], [SCENARIO, "env.num_envs", "valid integer"]),
        (["run", "scenarios/classic/cartpole_dqn.yaml", "--set", "env.id=Pendulum-v1", "--set", "env.vectorization=sync"], ["cartpole_dqn.yaml", "agent.name", "needs discrete actions"]),
        (["run", "scenarios/classic/cartpole_dqn.yaml", "--set", "env.id=Pendulum-v1"], ["cartpole_dqn.yaml", "env.vectorization", "Pendulum-v1 has no native vector env", "CartPole-v1"]),
        (["run", SCENARIO, "--budget", "huge"], ["--budget", "invalid choice"]),
        (["eval", SCENARIO, "--checkpoint", "nowhere/latest"], ["nowhere/latest", "checkpoint not found"]),
        (["validate", "scenarios/does_not_exist.yaml"], ["scenarios/does_not_exist.yaml", "file not found"]),
    ],
)
def test_bad_input_one_line(args, fragments, repo_root, tmp_path):
    result = run_cli([*args, *(["--out", str(tmp_path / "runs")] if args[0] == "run" else [])], repo_root)
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("metrics.json"))


def test_invalid_yaml_names_line(repo_root, tmp_path):
    path = write(tmp_path / "broken.yaml", "name: broken\nagent: {name: ppo\n")
    result = run_cli(["run", path, "--out", str(tmp_path / "runs")], repo_root)
    assert_one_line_error(result, path, "invalid YAML", "line")


def test_unknown_top_level_key_in_file(repo_root, tmp_path):
    text = (repo_root / SCENARIO).read_text().replace("extends: ../defaults/classic.yaml", f"extends: {repo_root}/scenarios/defaults/classic.yaml")
    path = write(tmp_path / "typo.yaml", text + "evalution:\n  episodes: 3\n")
    result = run_cli(["validate", path], repo_root)
    assert_one_line_error(result, path, "evalution", "Did you mean 'evaluation'")


def test_validate_lists_every_error(repo_root, tmp_path):
    path = write(tmp_path / "two.yaml", "name: two\ndomain: classic\nenv: {id: CartPole-v1}\nagent: {name: ppo, gamma: 2, clip_coef: -1}\n")
    result = run_cli(["validate", path], repo_root)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2
    assert "agent.gamma" in lines[0]
    assert "agent.clip_coef" in lines[1]


def test_unwritable_output_folder(repo_root, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = run_cli(["run", SCENARIO, "--budget", "smoke", "--out", str(blocker / "runs")], repo_root)
    assert_one_line_error(result, str(blocker / "runs"), "--out", "not writable")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = tmp_path_factory.mktemp("smoke")
    result = run_cli(["run", SCENARIO, "--budget", "smoke", "--out", str(out), "--no-progress", "--set", "evaluation.episodes=2"], root)
    assert result.returncode == 0, result.stderr
    (run_dir,) = (out / "cartpole_ppo").iterdir()
    return run_dir


def test_smoke_run_writes_run_folder(smoke_run):
    for name in ("scenario.yaml", "metrics.jsonl", "metrics.json", "report.md", "checkpoints/latest.safetensors", "checkpoints/latest.json"):
        assert (smoke_run / name).exists(), name
    assert any((smoke_run / "tb").iterdir())
    summary = json.loads((smoke_run / "metrics.json").read_text())
    assert set(summary) >= {"scenario", "domain", "agent", "seed", "episodes", "metrics", "ci95", "baselines"}
    assert summary["episodes"] == 6
    assert "random" in summary["baselines"]
    tags = set()
    for line in (smoke_run / "metrics.jsonl").read_text().splitlines():
        tags.update(json.loads(line))
    assert {"global_step", "charts/episodic_return", "charts/SPS", "losses/value_loss", "losses/policy_loss", "losses/approx_kl"} <= tags


def test_corrupt_checkpoint_one_line(smoke_run, repo_root, tmp_path):
    corrupt = tmp_path / "corrupt"
    data = bytearray((smoke_run / "checkpoints" / "latest.safetensors").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "corrupt.safetensors").write_bytes(bytes(data))
    (tmp_path / "corrupt.json").write_text((smoke_run / "checkpoints" / "latest.json").read_text())
    result = run_cli(["eval", SCENARIO, "--checkpoint", str(corrupt), "--out", str(tmp_path / "runs")], repo_root)
    assert_one_line_error(result, "corrupt.safetensors", "corrupt checkpoint")


def test_mismatched_checkpoint_one_line(smoke_run, repo_root, tmp_path):
    result = run_cli(["eval", "scenarios/classic/cartpole_dqn.yaml", "--checkpoint", str(smoke_run / "checkpoints" / "latest"), "--out", str(tmp_path / "runs")], repo_root)
    assert_one_line_error(result, "latest.json", "agent", "checkpoint is for 'ppo'")


def test_eval_of_checkpoint_writes_metrics(smoke_run, repo_root, tmp_path):
    result = run_cli(["eval", SCENARIO, "--checkpoint", str(smoke_run / "checkpoints" / "latest"), "--episodes", "2", "--out", str(tmp_path / "runs")], repo_root)
    assert result.returncode == 0, result.stderr
    (metrics,) = (tmp_path / "runs").rglob("metrics.json")
    summary = json.loads(metrics.read_text())
    assert summary["episodes"] == 6
    assert summary["agent"] == "ppo"


def test_failed_eval_leaves_no_run_folder(repo_root, tmp_path):
    result = run_cli(["eval", SCENARIO, "--out", str(tmp_path / "runs")], repo_root)
    assert_one_line_error(result, "checkpoint_path", "--checkpoint")
    assert not any((tmp_path / "runs").rglob("scenario.yaml"))


def test_run_files_have_usual_mode(smoke_run):
    import stat

    for name in ("metrics.json", "report.md", "scenario.yaml"):
        mode = stat.S_IMODE((smoke_run / name).stat().st_mode)
        assert mode & 0o044 == 0o044, f"{name} is {oct(mode)}"
