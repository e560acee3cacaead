"""End to end: the real Streamlit server on a loopback port, driven by Playwright in Debian's Chromium.

Each page is opened in English, switched to 简体中文 in the sidebar, and saved as a screenshot in
test-artifacts/screenshots/. The time from navigation to the visible page title (first paint) is
printed for each page; it is a measurement, not an assertion.

To add an app's own steps (a connect-four move, a driving episode), write a function
``step(page, language)`` that drives the page and asserts what a person would see, and append it
to the ``steps`` of that page's PageCheck. Each step runs in both languages, before the screenshot.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from shared.ui import jobs

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# The first visit of an app page imports its envs and models, which takes seconds on a cold server.
PAGE_TIMEOUT_MS = 90_000


@dataclass
class PageCheck:
    """One page to open: its URL path, its title in each language and checks to run in each language."""

    name: str
    url_path: str
    titles: dict[str, str]
    steps: list[Callable[[Page, str], None]]


def home_shows_scenarios(page: Page, language: str) -> None:
    """Check that Home lists the scenario files and ends with the command-line section."""
    texts = {"en": ("Scenarios", "Command line"), "zh-CN": ("场景", "命令行")}[language]
    for text in texts:
        expect(page.get_by_role("heading", name=text, exact=True)).to_be_visible()
    expect(page.get_by_test_id("stDataFrame").first).to_be_visible()


def runs_page_shows_sample_run(page: Page, language: str) -> None:
    """Check that the Runs page shows the sample run with its learning curve and metrics."""
    texts = {
        "en": ("Learning curves", "Agent ppo, 30 evaluation episodes, seed 1."),
        "zh-CN": ("学习曲线", "智能体 ppo，30 个评估回合，种子 1。"),
    }[language]
    for text in texts:
        expect(page.get_by_text(text, exact=True)).to_be_visible()
    expect(page.get_by_test_id("stVegaLiteChart")).to_be_visible()


def play_connect_four_move(page: Page, language: str) -> None:
    """Pick Connect Four, drop a disc into column 4 and check that the agent replies on the board."""
    label, option, answer, discs = {
        "en": ("Game", "Connect Four (self-play)", "The agent played column", "Discs on the board: {}"),
        "zh-CN": ("游戏", "四子棋（自我对弈）", "智能体下在第", "棋盘上的棋子数：{}"),
    }[language]
    page.get_by_test_id("stSelectbox").filter(has_text=label).click()
    page.get_by_role("option", name=option, exact=True).click()
    wait_until_idle(page)
    caption = page.get_by_text(re.compile(re.escape(discs.format("")) + r"\d+$"))
    expect(caption).to_be_visible()
    before = int(caption.inner_text().rsplit("：" if language == "zh-CN" else " ", 1)[-1])
    page.get_by_test_id("stMain").get_by_role("button", name="↓ 4", exact=True).click()
    wait_until_idle(page)
    expect(page.get_by_text(answer)).to_be_visible()
    # The person's disc and the agent's reply.
    expect(page.get_by_text(discs.format(before + 2), exact=True)).to_be_visible()


def run_short_driving_episode(page: Page, language: str) -> None:
    """Pick the merge scenario, set the episode to 5 steps, run it and check the panel and the outcome line."""
    scenario_label, label, button, outcome = {
        "en": ("Scenario", "Episode length (steps)", "Run episode", r"(No collision in 5 steps\.|The ego vehicle crashed at step \d+\.)"),
        "zh-CN": ("场景", "回合长度（步）", "运行回合", r"(5 步内没有碰撞。|自车在第 \d+ 步发生碰撞。)"),
    }[language]
    page.get_by_test_id("stSelectbox").filter(has_text=scenario_label).click()
    page.get_by_role("option", name="merge · merge-v1", exact=True).click()
    wait_until_idle(page)
    expect(page.get_by_text(re.compile(r"scenarios/driving/merge_ppo\.yaml"))).to_be_visible()
    slider = page.get_by_test_id("stSlider").filter(has_text=label).get_by_role("slider")
    slider.focus()
    page.keyboard.press("Home")
    wait_until_idle(page)
    expect(slider).to_have_value("5")
    page.get_by_role("button", name=button).click()
    expect(page.get_by_text(re.compile(outcome))).to_be_visible(timeout=PAGE_TIMEOUT_MS)
    wait_until_idle(page)
    expect(page.get_by_test_id("stMetric").filter(has_text="TTC")).to_be_visible()
    expect(page.get_by_test_id("stImage").first).to_be_visible()


PAGES = [
    PageCheck("home", "", {"en": "ScenarioLab", "zh-CN": "ScenarioLab"}, [home_shows_scenarios]),
    PageCheck("game_ai", "game-ai", {"en": "Game AI", "zh-CN": "游戏 AI"}, [play_connect_four_move]),
    PageCheck("driving", "driving", {"en": "Driving", "zh-CN": "自动驾驶"}, [run_short_driving_episode]),
    PageCheck("recommendation", "recommendation", {"en": "Recommendation", "zh-CN": "推荐系统"}, []),
    PageCheck("runs", "runs", {"en": "Runs", "zh-CN": "运行记录"}, [runs_page_shows_sample_run]),
]


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_sample_run(runs: Path) -> None:
    run = runs / "cartpole_ppo" / "20260101-120000-seed1"
    (run / "checkpoints").mkdir(parents=True)
    curve = [{"global_step": step, "charts/episodic_return": value} for step, value in ((1000, 21.0), (2000, 74.0), (3000, 163.0))]
    (run / "metrics.jsonl").write_text("".join(json.dumps(record) + "\n" for record in curve), encoding="utf-8")
    summary = {
        "scenario": "cartpole_ppo",
        "domain": "classic",
        "agent": "ppo",
        "seed": 1,
        "episodes": 30,
        "metrics": {"return_mean": 187.5},
        "ci95": {"return_mean": [160.5, 200.0]},
        "baselines": {"random": {"return_mean": 22.25}},
    }
    (run / "metrics.json").write_text(json.dumps(summary), encoding="utf-8")
    (run / "report.md").write_text("# cartpole_ppo\n\nReturn 187.5.\n", encoding="utf-8")


def wait_for_health(url: str, process: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"streamlit exited with status {process.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.25)
    raise AssertionError(f"{url} did not answer within {timeout:.0f} s")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """Start `streamlit run streamlit_app.py` on a free loopback port; yield its URL and runs folder."""
    folder = tmp_path_factory.mktemp("e2e")
    runs = folder / "runs"
    write_sample_run(runs)
    port = free_loopback_port()
    command = [
        sys.executable, "-m", "streamlit", "run", "streamlit_app.py",
        "--server.headless", "true",
        "--server.port", str(port),
        "--server.address", "127.0.0.1",
        "--browser.gatherUsageStats", "false",
    ]
    environment = dict(os.environ, SCENARIOLAB_RUNS_DIR=str(runs))
    with open(folder / "streamlit.log", "wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_health(f"http://127.0.0.1:{port}/_stcore/health", process)
        yield f"http://127.0.0.1:{port}", runs
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        # Training jobs run in their own session and outlive the server, so end any still running.
        for job in jobs.read_jobs(runs):
            if jobs.is_alive(job):
                os.killpg(job.pid, signal.SIGKILL)
        print((folder / "streamlit.log").read_text(encoding="utf-8", errors="replace")[-4000:])


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def wait_until_idle(page: Page, timeout_s: float = PAGE_TIMEOUT_MS / 1000) -> None:
    """Wait until the script run has finished and no element from the previous run is left.

    Streamlit marks elements of the previous run with data-stale="true" until the new run replaces
    them, and shows a running icon in its status widget while a script runs.
    """
    busy = page.locator('[data-testid="stElementContainer"][data-stale="true"], [data-testid="stStatusWidgetRunningIcon"], [data-testid="stSpinner"]')
    deadline = time.monotonic() + timeout_s
    calm_checks = 0
    while calm_checks < 3:
        assert time.monotonic() < deadline, "the page kept running"
        calm_checks = calm_checks + 1 if busy.count() == 0 else 0
        page.wait_for_timeout(250)


def page_title(page: Page, text: str):
    return page.get_by_test_id("stMain").get_by_role("heading", level=1).filter(has_text=text).first


def switch_language(page: Page, label: str) -> None:
    page.get_by_test_id("stSidebar").get_by_test_id("stSelectbox").click()
    page.get_by_role("option", name=label).click()


@pytest.mark.slow
@pytest.mark.parametrize("check", PAGES, ids=[check.name for check in PAGES])
def test_page_in_browser(check: PageCheck, server: tuple[str, Path], browser: Browser) -> None:
    url, _ = server
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    # Streamlit scrolls inside its main container, so a full-page screenshot shows only the viewport;
    # a tall viewport keeps most of each page in the picture.
    context = browser.new_context(viewport={"width": 1400, "height": 2200}, locale="en-US")
    page = context.new_page()
    try:
        started = time.monotonic()
        page.goto(f"{url}/{check.url_path}")
        expect(page_title(page, check.titles["en"])).to_be_visible(timeout=PAGE_TIMEOUT_MS)
        first_paint = time.monotonic() - started
        # The share spent loading the HTML and the JavaScript bundle, before the app's script ran.
        bundle = page.evaluate("performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd") / 1000
        print(f"first paint of {check.name}: {first_paint:.2f} s (page and JavaScript loaded after {bundle:.2f} s)")

        for language in ("en", "zh-CN"):
            if language != "en":
                switch_language(page, "简体中文")
                expect(page.get_by_test_id("stSidebarNav").get_by_text(PAGES[-1].titles[language])).to_be_visible()
                expect(page_title(page, check.titles[language])).to_be_visible(timeout=PAGE_TIMEOUT_MS)
            wait_until_idle(page)
            expect(page.get_by_test_id("stException")).to_have_count(0)
            for step in check.steps:
                step(page, language)
            page.screenshot(path=str(SCREENSHOTS / f"{check.name}-{language}.png"))
    finally:
        context.close()


def choose_option(page: Page, label: str, option: str) -> None:
    """Pick ``option`` in the selectbox labelled ``label`` by typing it, as a keyboard user would."""
    box = page.get_by_test_id("stSelectbox").filter(has_text=label)
    box.click()
    page.keyboard.type(option)
    # Enter picks the highlighted match: clicking the option can time out while the list re-renders.
    page.get_by_role("option", name=option, exact=True).wait_for()
    page.keyboard.press("Enter")


@pytest.mark.slow
def test_training_job_in_browser(server: tuple[str, Path], browser: Browser) -> None:
    """Start a real training job from the Runs page, watch it poll its metrics, and stop it."""
    url, runs = server
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1400, "height": 2200}, locale="en-US")
    page = context.new_page()
    try:
        page.goto(f"{url}/runs")
        expect(page_title(page, "Runs")).to_be_visible(timeout=PAGE_TIMEOUT_MS)
        wait_until_idle(page)
        page.get_by_text("Start a new run").click()
        choose_option(page, "Scenario", "cartpole_ppo (classic, ppo)")
        choose_option(page, "Budget", "default")
        page.get_by_role("button", name="Start training").click()
        expect(page.get_by_text("Started cartpole_ppo (pid")).to_be_visible(timeout=PAGE_TIMEOUT_MS)

        # No click from here on: only the job panel's own polling can show the progress.
        expect(page.get_by_text("Latest logged global_step:")).to_be_visible(timeout=120_000)
        page.screenshot(path=str(SCREENSHOTS / "runs-job-running-en.png"))

        page.get_by_test_id("stMain").get_by_role("button", name="Stop", exact=True).click()
        expect(page.get_by_text("The job was stopped. Saved checkpoints: latest.")).to_be_visible(timeout=120_000)
        wait_until_idle(page)
        page.screenshot(path=str(SCREENSHOTS / "runs-job-stopped-en.png"))

        [job] = jobs.read_jobs(runs)
        assert job.command[-9:] == ["run", str(ROOT / "scenarios" / "classic" / "cartpole_ppo.yaml"), "--budget", "default", "--seed", "0", "--out", str(runs), "--no-progress"]
        assert job.stop_requested is True
        # The server started the job, so it collected the exit status: 130 after Ctrl-C.
        assert job.returncode == 130
        run_folder = jobs.find_run_folder(runs, job)
        assert run_folder is not None
        assert (run_folder / "checkpoints" / "latest.json").is_file()
    finally:
        context.close()
