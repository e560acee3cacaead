"""Every page of the Streamlit app under streamlit.testing.v1.AppTest, in English and Chinese."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.ui.runfolders import APP, ROOT, SUMMARY, write_run
from shared.ui import i18n

PAGE_TITLES = {
    "shared/ui/home.py": {"en": "ScenarioLab", "zh-CN": "ScenarioLab"},
    "apps/game_ai/ui.py": {"en": "Game AI", "zh-CN": "游戏 AI"},
    "apps/driving/ui.py": {"en": "Driving", "zh-CN": "自动驾驶"},
    "apps/recommendation/ui.py": {"en": "Recommendation", "zh-CN": "推荐系统"},
    "shared/ui/runs.py": {"en": "Runs", "zh-CN": "运行记录"},
}

# The first run of an app page, or of full validation on Home, imports the apps' envs, which takes seconds.
TIMEOUT = 120


def open_page(page: str, language: str = "en") -> AppTest:
    """Run the app, choose the language, open ``page`` and return the finished AppTest."""
    app = AppTest.from_file(APP, default_timeout=TIMEOUT)
    app.session_state["language"] = language
    app.run()
    if page != "shared/ui/home.py":
        app.switch_page(page).run()
    return app


def texts(elements) -> list[str]:
    return [str(element.value) for element in elements]


@pytest.mark.parametrize("language", ["en", "zh-CN"])
@pytest.mark.parametrize("page", list(PAGE_TITLES))
def test_page_renders(page: str, language: str, runs_dir: Path) -> None:
    app = open_page(page, language)
    assert not app.exception, app.exception
    assert texts(app.title)[0] == PAGE_TITLES[page][language]
    assert not i18n.missing_keys()


def test_language_switch_changes_labels(runs_dir: Path) -> None:
    app = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert "Scenarios" in texts(app.subheader)
    assert "Command line" in texts(app.subheader)

    app.sidebar.selectbox(key="language").set_value("zh-CN").run()
    assert "场景" in texts(app.subheader)
    assert "命令行" in texts(app.subheader)
    assert "Scenarios" not in texts(app.subheader)

    # The choice stays when another page opens.
    app.switch_page("shared/ui/runs.py").run()
    assert texts(app.title) == ["运行记录"]
    app.sidebar.selectbox(key="language").set_value("en").run()
    assert texts(app.title) == ["Runs"]


def test_home_lists_scenarios_and_links(runs_dir: Path) -> None:
    app = open_page("shared/ui/home.py")
    labels = [link.proto.label for link in app.get("page_link")]
    assert labels == ["Game AI", "Driving", "Recommendation", "Runs"]
    # Every scenario file is either a row of the table or one error line naming the file.
    from shared.scenario import find_scenario_files

    files = find_scenario_files()
    rows = len(app.dataframe[0].value) if app.dataframe else 0
    errors = [text for text in texts(app.error) if ".yaml" in text]
    assert rows + len(errors) == len(files)


def test_home_lists_scenarios_without_importing_apps() -> None:
    # Home is the first page of a browser session, so its scenario list must not import the apps'
    # heavy dependencies (they cost seconds before anything else can draw).
    script = (
        "import sys\n"
        "from shared.ui.components import scenario_entries\n"
        "entries = scenario_entries()\n"
        "heavy = ('torch', 'highway_env', 'ale_py', 'pettingzoo', 'recbole', 'transformers', 'apps.driving', 'apps.game_ai')\n"
        "print(len(entries), sum(entry.error is None for entry in entries), sorted(name for name in heavy if name in sys.modules))\n"
    )
    finished = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr[-2000:]
    from shared.scenario import find_scenario_files

    files = len(find_scenario_files())
    assert finished.stdout.strip() == f"{files} {files} []"


def test_home_full_validation_on_request(runs_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # bad_driving.yaml has valid common fields but a misspelt highway-env config key, so the table
    # lists it and only full validation finds the error. unreadable.yaml is invalid YAML, so its
    # error line shows at once, and full validation must not repeat it.
    (tmp_path / "scenarios").mkdir()
    bad = tmp_path / "scenarios" / "bad_driving.yaml"
    bad.write_text(
        "name: bad_driving\ndomain: driving\nkind: driving\nenv: {id: highway-fast-v0, config: {lanes_cnt: 3}}\nagent: {name: ppo}\n",
        encoding="utf-8",
    )
    unreadable = tmp_path / "scenarios" / "unreadable.yaml"
    unreadable.write_text("name: [unclosed\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    from shared.scenario import find_scenario_files

    listed = len(find_scenario_files()) - 1
    app = open_page("shared/ui/home.py")
    assert not app.exception, app.exception
    assert "bad_driving" in list(app.dataframe[0].value["Scenario"])
    assert len(app.dataframe[0].value) == listed
    [yaml_error] = texts(app.error)
    assert yaml_error.startswith(f"{unreadable}: line 2, column 1: invalid YAML: ")
    assert texts(app.success) == []

    app.button(key="home_validate").click().run()
    assert not app.exception, app.exception
    assert f"**1 of the {listed} scenario files in the table fail full validation:**" in texts(app.markdown)
    first, second = texts(app.error)
    assert first == yaml_error
    assert second.startswith(f"{bad}: env.config.lanes_cnt: unknown value 'lanes_cnt'; allowed: ")
    assert second.endswith("Did you mean 'lanes_count'?")

    # The result stays on later reruns, such as a language switch.
    app.sidebar.selectbox(key="language").set_value("zh-CN").run()
    assert f"**表中 {listed} 个场景文件有 1 个未通过完整校验：**" in texts(app.markdown)


def test_runs_page_shows_run_metrics(runs_dir: Path) -> None:
    write_run(runs_dir)
    app = open_page("shared/ui/runs.py")
    assert not app.exception, app.exception

    overview = app.dataframe[0].value
    assert list(overview["Run"]) == ["cartpole_ppo/20260101-120000-seed1"]
    assert app.multiselect(key="selected_runs").value == ["cartpole_ppo/20260101-120000-seed1"]
    assert app.selectbox(key="curve_tag").value == "charts/episodic_return"
    charts = app.get("vega_lite_chart")
    assert len(charts) == 1
    spec = json.loads(charts[0].proto.spec)
    assert spec["encoding"]["x"]["field"] == "global_step"
    assert spec["encoding"]["y"]["title"] == "charts/episodic_return"

    metrics = app.dataframe[1].value.set_index("Metric")
    assert metrics.loc["return_mean", "Value"] == 187.5
    assert metrics.loc["return_mean", "95% CI low"] == 160.5
    assert metrics.loc["return_mean", "95% CI high"] == 200.0
    assert metrics.loc["return_mean", "random (baseline)"] == 22.25
    assert "Agent ppo, 30 evaluation episodes, seed 1." in texts(app.caption)
    assert "PPO on CartPole-v1 reached the maximum return." in "".join(texts(app.markdown))
    assert "`latest`: global_step 3000" in texts(app.markdown)


def test_runs_page_compares_two_runs(runs_dir: Path) -> None:
    write_run(runs_dir)
    second = dict(SUMMARY, metrics={"return_mean": 95.0}, ci95={"return_mean": [80.0, 110.0]})
    write_run(runs_dir, folder="20260102-120000-seed2", summary=second)
    app = open_page("shared/ui/runs.py")
    first_label, second_label = "cartpole_ppo/20260101-120000-seed1", "cartpole_ppo/20260102-120000-seed2"
    app.multiselect(key="selected_runs").set_value([second_label, first_label]).run()
    assert not app.exception, app.exception

    table = app.dataframe[1].value
    assert table.loc["return_mean", first_label] == "187.5 [160.5, 200]"
    assert table.loc["return_mean", second_label] == "95 [80, 110]"
    # return_iqm exists in one run only, so the other's cell stays empty.
    assert table.loc["return_iqm", second_label] == ""
    assert app.selectbox(key="detail_run").options == [second_label, first_label]


@pytest.mark.parametrize(
    ("language", "expected"),
    [("en", "is not valid JSON"), ("zh-CN", "不是有效的 JSON")],
)
def test_corrupt_run_folder_message(language: str, expected: str, runs_dir: Path) -> None:
    path = write_run(runs_dir, summary=None)
    (path / "metrics.json").write_text('{"metrics": {"return_mean": 1', encoding="utf-8")
    (path / "metrics.jsonl").write_text('{"global_step": 1, "charts/episodic_return": 3.0}\nnot json\n', encoding="utf-8")
    app = open_page("shared/ui/runs.py", language)
    assert not app.exception, app.exception
    warnings = texts(app.warning)
    assert any(expected in text and "cartpole_ppo/20260101-120000-seed1" in text for text in warnings), warnings
    assert any(("1 invalid lines" if language == "en" else "1 行无效") in text for text in warnings), warnings


def test_missing_checkpoint_message(runs_dir: Path) -> None:
    write_run(runs_dir, checkpoint_step=None)
    app = open_page("shared/ui/runs.py")
    assert not app.exception, app.exception
    assert any("No checkpoint in cartpole_ppo/20260101-120000-seed1" in text for text in texts(app.warning))


def test_unfinished_run_is_a_note(runs_dir: Path) -> None:
    write_run(runs_dir, summary=None)
    app = open_page("shared/ui/runs.py")
    note = "cartpole_ppo/20260101-120000-seed1: no metrics.json (the run has not finished its evaluation)"
    assert note in texts(app.info)
    assert texts(app.warning) == []


def test_empty_runs_folder_message(runs_dir: Path) -> None:
    app = open_page("shared/ui/runs.py", "zh-CN")
    assert texts(app.info)[-1] == f"`{runs_dir}` 中还没有运行目录。可在上方或用 `scenariolab run` 启动一次运行。"


def test_failing_page_shows_translated_error(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text('raise RuntimeError("demo failure")\n', encoding="utf-8")
    (tmp_path / "main.py").write_text(
        textwrap.dedent(
            """
            import streamlit as st
            from shared.ui.components import run_page_safely

            run_page_safely(st.navigation([st.Page("broken.py", title="Broken")]))
            """
        ),
        encoding="utf-8",
    )
    app = AppTest.from_file(str(tmp_path / "main.py"), default_timeout=TIMEOUT)
    app.session_state["language"] = "zh-CN"
    app.run()
    assert not app.exception, app.exception
    assert texts(app.error) == ["页面“Broken”加载失败：RuntimeError: demo failure。其他页面仍可使用；完整的 traceback 见服务器日志。"]


@pytest.mark.slow
def test_runs_page_reads_real_cli_run(runs_dir: Path) -> None:
    command = [sys.executable, "-m", "shared.cli", "run", "cartpole_ppo", "--budget", "smoke", "--seed", "3", "--out", str(runs_dir), "--no-progress"]
    finished = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-2000:]
    [run_folder] = list((runs_dir / "cartpole_ppo").iterdir())
    summary = json.loads((run_folder / "metrics.json").read_text(encoding="utf-8"))

    app = open_page("shared/ui/runs.py")
    assert not app.exception, app.exception
    assert texts(app.warning) == []
    metrics = app.dataframe[1].value.set_index("Metric")
    assert metrics.loc["return_mean", "Value"] == summary["metrics"]["return_mean"]
    assert metrics.loc["return_mean", "95% CI low"] == summary["ci95"]["return_mean"][0]
    # The report's PNG plots are drawn from the run folder.
    assert len(app.get("image")) >= 1
    assert any("| return_mean |" in text for text in texts(app.markdown))
