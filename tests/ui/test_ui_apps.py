"""The three app pages under streamlit.testing.v1.AppTest: each renders in both languages and its main widgets work."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from shared.ui import i18n
from tests.ui.runfolders import APP

TIMEOUT = 120
GAME = "apps/game_ai/ui.py"
DRIVING = "apps/driving/ui.py"
RECOMMENDATION = "apps/recommendation/ui.py"


def open_app_page(page: str, language: str) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=TIMEOUT)
    app.session_state["language"] = language
    app.run()
    app.switch_page(page).run()
    assert not app.exception, app.exception
    return app


def values(elements) -> list[str]:
    return [str(element.value) for element in elements]


def choose_connect_four(app: AppTest) -> None:
    app.selectbox(key="game_ai_game").select_index(1).run()


def board_of(app: AppTest) -> np.ndarray:
    return app.session_state["c4_game"].board[0].copy()


@pytest.mark.parametrize("language", ["en", "zh-CN"])
def test_connect_four_agent_replies(language: str, runs_dir: Path) -> None:
    app = open_app_page(GAME, language)
    choose_connect_four(app)
    assert not app.exception, app.exception
    assert not app.error, values(app.error)
    assert np.count_nonzero(board_of(app)) == 0
    assert values(app.info)[0] == {"en": "Your turn: pick a column.", "zh-CN": "轮到你了：请选择一列。"}[language]

    app.button(key="c4_col_3").click().run()
    board = board_of(app)
    # The person's disc lands at the bottom of column 4 (index 3), and the agent replies with one disc.
    assert board[5, 3] == 1
    assert np.count_nonzero(board == 1) == 1
    assert np.count_nonzero(board == 2) == 1
    answer = int(np.argwhere(board == 2)[0][1]) + 1
    expected = {"en": f"The agent played column {answer}.", "zh-CN": f"智能体下在第 {answer} 列。"}[language]
    assert expected in values(app.caption)
    discs = {"en": "Discs on the board: 2", "zh-CN": "棋盘上的棋子数：2"}[language]
    assert [image.captions for image in app.get("image")] == [[discs]]
    assert not i18n.missing_keys()


def test_connect_four_full_column_and_win(runs_dir: Path) -> None:
    app = open_app_page(GAME, "en")
    choose_connect_four(app)
    game = app.session_state["c4_game"]
    # Column 1 full with alternating discs, three red discs at the bottom of columns 2-4, yellow on
    # columns 5-7: 6 + 3 + 3 = 12 discs, red (the person) to move, and column 5 wins for red.
    game.board[0] = 0
    game.board[0, :, 0] = [2, 1, 2, 1, 2, 1]
    game.board[0, 5, 1:4] = 1
    game.board[0, 5, 4:7] = 2
    game.plies[0] = 12
    game.to_move[0] = 0
    app.run()
    assert app.button(key="c4_col_0").disabled
    assert not app.button(key="c4_col_4").disabled

    app.button(key="c4_col_4").click().run()
    assert app.session_state["c4_result"] == "human"
    assert "You won." in values(app.success)
    assert all(app.button(key=f"c4_col_{column}").disabled for column in range(7))

    app.button(key="c4_new").click().run()
    assert np.count_nonzero(board_of(app)) == 0
    assert not app.button(key="c4_col_0").disabled


def test_missing_checkpoint_shows_message(runs_dir: Path) -> None:
    app = open_app_page(GAME, "zh-CN")
    app.text_input(key="game_ai_checkpoint_breakout").set_value("nowhere/breakout").run()
    assert not app.exception, app.exception
    assert values(app.error) == [
        "nowhere/breakout 处没有检查点：nowhere/breakout.safetensors 和 nowhere/breakout.json 必须同时存在。"
        "请选择 apps/game_ai/checkpoints/ 下随附的检查点，或某个运行目录中的检查点。"
    ]


def test_breakout_return_and_baseline(runs_dir: Path) -> None:
    app = open_app_page(GAME, "en")
    app.slider(key="breakout_steps").set_value(20).run()
    app.button(key="breakout_play").click().run()
    assert not app.exception, app.exception
    assert not app.error, values(app.error)
    labels = [metric.label for metric in app.metric]
    assert labels == ["Return of the PPO agent", "Return of a random policy"]
    result = app.session_state["breakout_result"]
    assert result["steps"] == 20
    assert result["return"] >= 0
    assert result["random"] >= 0
    assert len(app.get("image")) == 1


@pytest.mark.parametrize("language", ["en", "zh-CN"])
def test_driving_episode_panel(language: str, runs_dir: Path) -> None:
    app = open_app_page(DRIVING, language)
    # No run folder yet, so the shipped benchmark is shown with a note.
    assert len(app.info) == 1
    assert "| PPO-Lagrangian + shield |" in "\n".join(values(app.markdown))
    app.slider(key="drive_steps").set_value(5).run()
    app.button(key="drive_run").click().run()
    assert not app.exception, app.exception
    assert not app.error, values(app.error)
    panels = app.session_state["drive_episode"]["panels"]
    # The reset yields step 0, then one panel per step.
    assert [panel["step"] for panel in panels] == [0, 1, 2, 3, 4, 5]
    # tests/conftest.py sets SDL_VIDEODRIVER=dummy, and the frame must still show the road (grey, mean about 104).
    frame = app.session_state["drive_episode"]["frame"]
    assert frame.shape == (150, 600, 3)
    assert frame.mean() > 20
    assert frame.std() > 20
    labels = [metric.label for metric in app.metric]
    speed, cost, shield = {"en": ("Speed (m/s)", "Cost (this step)", "Shield interventions"), "zh-CN": ("速度（m/s）", "代价（本步）", "护盾干预次数")}[language]
    assert {"TTC", speed, cost, shield} <= set(labels)
    step_line = {"en": "Step 5, action", "zh-CN": "第 5 步，动作"}[language]
    assert any(text.startswith(step_line) for text in values(app.caption))
    assert len(app.get("vega_lite_chart")) == 1
    assert not i18n.missing_keys()


@pytest.mark.parametrize("language", ["en", "zh-CN"])
def test_driving_picker_merge_episode(language: str, runs_dir: Path) -> None:
    app = open_app_page(DRIVING, language)
    assert app.selectbox(key="drive_scenario").options == [
        "highway · highway-fast-v0",
        "merge · merge-v1",
        "roundabout · roundabout-v1",
        "intersection · intersection-v2",
        "racetrack · racetrack-v1",
    ]
    shielded, random_label = {"en": ("{} + shield", "random"), "zh-CN": ("{} + 护盾", "随机")}[language]
    assert app.selectbox(key="drive_agent").options == [shielded.format("PPO-Lagrangian"), "PPO-Lagrangian", "PPO", "DQN", "IDM/MOBIL", random_label]

    app.selectbox(key="drive_scenario").select("merge · merge-v1").run()
    assert app.selectbox(key="drive_agent").options == [shielded.format("PPO"), "IDM/MOBIL", random_label]
    not_offered = {
        "en": "Not offered on merge: PPO-Lagrangian + shield: no shipped checkpoint; PPO-Lagrangian: no shipped checkpoint; DQN: no shipped checkpoint.",
        "zh-CN": "merge 上不提供：PPO-Lagrangian + 护盾：没有随附检查点；PPO-Lagrangian：没有随附检查点；DQN：没有随附检查点。",
    }[language]
    assert not_offered in values(app.caption)
    scenario_file = {"en": "Scenario file: scenarios/driving/merge_ppo.yaml (shield on)", "zh-CN": "场景文件：scenarios/driving/merge_ppo.yaml（护盾开启）"}[language]
    assert scenario_file in values(app.caption)

    app.selectbox(key="drive_agent").select(shielded.format("PPO")).run()
    app.slider(key="drive_steps").set_value(5).run()
    app.button(key="drive_run").click().run()
    assert not app.exception, app.exception
    assert not app.error, values(app.error)
    episode = app.session_state["drive_episode"]
    assert (episode["choice"].scenario, episode["choice"].agent) == ("merge", "ppo")
    panels = episode["panels"]
    # merge-v1 ends early only on a crash, so the episode has all 5 steps unless the ego crashed.
    assert [panel["step"] for panel in panels] == list(range(len(panels)))
    assert len(panels) == 6 or panels[-1]["crashed"]
    assert episode["frame"].shape == (150, 600, 3)
    assert episode["frame"].std() > 20

    labels = [metric.label for metric in app.metric]
    speed, cost, shield = {"en": ("Speed (m/s)", "Cost (this step)", "Shield interventions"), "zh-CN": ("速度（m/s）", "代价（本步）", "护盾干预次数")}[language]
    assert {"TTC", speed, cost, shield} <= set(labels)
    metric_values = {metric.label: metric.value for metric in app.metric}
    last = panels[-1]
    assert metric_values[speed] == f"{last['speed']:.1f}"
    assert metric_values["TTC"] == f"{last['ttc']:.2f} s"
    assert metric_values[cost] == f"{last['cost']:.2f}"
    assert metric_values[shield] == str(last["shield_interventions"])
    last_episode = {"en": "Last episode: merge, PPO + shield, seed 0.", "zh-CN": "上一回合：merge，PPO + 护盾，种子 0。"}[language]
    assert last_episode in values(app.caption)
    # No merge run in the runs folder and the shipped benchmark is of highway, so only a note shows.
    no_evaluation = {"en": "No evaluation on merge-v1 yet", "zh-CN": "merge-v1 上还没有评估结果"}[language]
    assert any(text.startswith(no_evaluation) for text in values(app.info))
    assert not i18n.missing_keys()


def test_driving_picker_racetrack_without_idm(runs_dir: Path) -> None:
    app = open_app_page(DRIVING, "en")
    app.selectbox(key="drive_scenario").select("racetrack · racetrack-v1").run()
    assert not app.exception, app.exception
    assert app.selectbox(key="drive_agent").options == ["PPO", "random"]
    reason = "IDM/MOBIL: needs discrete meta-actions, but this env steers continuously."
    assert any(text.startswith("Not offered on racetrack:") and text.endswith(reason) for text in values(app.caption))
    sliders = [slider.label for slider in app.slider]
    assert sliders == ["Episode length (steps)", "density", "aggressive", "action_delay"]


@pytest.mark.parametrize("language", ["en", "zh-CN"])
def test_recommendation_lists_and_session(language: str, runs_dir: Path) -> None:
    app = open_app_page(RECOMMENDATION, language)
    assert not app.error, values(app.error)
    history, base, rl = app.dataframe[:3]
    assert len(history.value) == 10
    assert len(base.value) == 10
    assert len(rl.value) == 10
    change = {"en": "Change", "zh-CN": "变化"}[language]
    same, new = {"en": ("same place", "new"), "zh-CN": ("位置不变", "新增")}[language]
    up, down = {"en": ("up ", "down "), "zh-CN": ("上升 ", "下降 ")}[language]
    assert all(cell in (same, new) or cell.startswith((up, down)) for cell in rl.value[change])

    app.button(key="rec_next").click().run()
    assert not app.exception, app.exception
    session = app.session_state["rec_session"]
    assert len(session.steps) == 1
    slate = app.dataframe[3].value
    assert len(slate) == len(session.steps[0]["slate"]) == 10
    clicks = sum(item["clicked"] for item in session.steps[0]["slate"])
    clicked = {"en": "Clicked", "zh-CN": "已点击"}[language]
    assert (slate[clicked] == "✓").sum() == clicks
    assert not i18n.missing_keys()


def test_latest_runs_fill_tables(runs_dir: Path) -> None:
    from PIL import Image

    from tests.ui.runfolders import write_run

    driving = {
        "scenario": "highway_robustness",
        "domain": "driving",
        "agent": "shielded_ppo",
        "seed": 0,
        "episodes": 10,
        "metrics": {"collision_rate": 0.1, "min_ttc_mean": 5.5},
        "ci95": {"collision_rate": [0.0, 0.3]},
        "baselines": {"idm": {"collision_rate": 0.0, "min_ttc_mean": 9.25}},
    }
    folder = write_run(runs_dir, "highway_robustness", "20260102-080000-seed0", summary=driving, curve=None)
    Image.new("RGB", (40, 30), "white").save(folder / "robustness_density_collision_rate.png")
    recommendation = {
        "scenario": "movielens_rl_rerank",
        "domain": "recommendation",
        "agent": "ppo",
        "seed": 0,
        "episodes": 3,
        "metrics": {"ndcg@10": 0.0625, "online_ctr": 0.375},
        "ci95": {},
        "baselines": {"base": {"ndcg@10": 0.05, "online_ctr": 0.25}},
    }
    write_run(runs_dir, "movielens_rl_rerank", "20260102-090000-seed0", summary=recommendation, curve=None)

    app = open_app_page(DRIVING, "en")
    table = app.dataframe[0].value
    assert list(table["metric"]) == ["collision_rate", "min_ttc_mean"]
    assert list(table["value"]) == [0.1, 5.5]
    assert list(table["idm"]) == [0.0, 9.25]
    assert [image.captions for image in app.get("image")] == [["robustness_density_collision_rate"]]

    app.switch_page(RECOMMENDATION).run()
    assert not app.exception, app.exception
    table = app.dataframe[-1].value
    assert list(table["metric"]) == ["ndcg@10", "online_ctr"]
    assert list(table["base"]) == [0.05, 0.25]
