"""Streamlit page of the game AI app: watch the PPO agent play Breakout, and play Connect Four against the self-play agent.

Streamlit runs this file as a page script each time the page is open (see streamlit_app.py).
Checkpoints and envs load once through ``st.cache_resource``; an episode runs only on a button press.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from shared.ui.i18n import t

logger = logging.getLogger("scenariolab.ui.game_ai")

ROOT = Path(__file__).resolve().parents[2]
CHECKPOINTS = ROOT / "apps" / "game_ai" / "checkpoints"
SCENARIOS = ROOT / "scenarios" / "game_ai"

# game -> (scenario file, shipped checkpoint stem)
GAMES: dict[str, tuple[str, str]] = {
    "breakout": ("breakout_ppo.yaml", "breakout_ppo"),
    "connect_four": ("connect_four_selfplay.yaml", "connect_four"),
    "pistonball": ("pistonball_ppo.yaml", "pistonball"),
}

# At most this many frames per second while an episode plays. Breakout's agent steps are 4 emulator
# frames, so 15 per second is the game's own speed; a slower machine shows fewer.
DISPLAY_FPS = 15
BOARD_COLOUR = (28, 76, 168)
# Board cell value -> disc colour: empty, player_0 (red), player_1 (yellow).
DISC_COLOURS = {0: (245, 245, 245), 1: (214, 40, 40), 2: (245, 196, 30)}
COLOUR_KEYS = {1: "game_ai.c4.red", 2: "game_ai.c4.yellow"}


def checkpoint_exists(stem: str) -> bool:
    """Return True when both files of a checkpoint (``stem.safetensors`` and ``stem.json``) exist."""
    path = Path(stem)
    if path.suffix in (".json", ".safetensors"):
        path = path.with_suffix("")
    return path.with_suffix(".safetensors").is_file() and path.with_suffix(".json").is_file()


@st.cache_resource(show_spinner=False)
def load_scenario_cached(file: str) -> Any:
    """Load and validate a scenario file once per server."""
    from shared.scenario import load_scenario

    return load_scenario(file)


@st.cache_resource(show_spinner=False)
def load_connect_four_agent(stem: str) -> Any:
    """Load the Connect Four policy once per server."""
    from apps.game_ai.connect_four import ConnectFourAgent

    return ConnectFourAgent.load(stem)


@st.cache_resource(show_spinner=False)
def load_atari_policy(scenario_file: str, stem: str) -> Any:
    """Build the scenario's agent, load its weights from ``stem`` and return a greedy one-observation policy."""
    from shared.checkpoints import load_agent
    from shared.evaluation import agent_policy
    from shared.registry import get_kind

    loaded = load_scenario_cached(scenario_file)
    kind = get_kind(loaded.scenario.kind, str(loaded.source))
    env = kind.make_env(loaded, training=False)
    try:
        learner = kind.build_agent(loaded, env, 0, 0)
    finally:
        env.close()
    load_agent(learner, Path(stem), weights_only=True)
    return agent_policy(learner, deterministic=True)


@st.cache_data(show_spinner=False)
def random_game_return(scenario_file: str, seed: int, max_steps: int) -> float:
    """Return the score of one uniform random game with the same seed and step limit, as a baseline."""
    from shared.registry import get_kind

    loaded = load_scenario_cached(scenario_file)
    kind = get_kind(loaded.scenario.kind, str(loaded.source))
    env = kind.make_env(loaded, seed=seed, training=False)
    try:
        env.reset(seed=seed)
        total = 0.0
        for _ in range(max_steps):
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            total += float(reward)
            if terminated or truncated:
                break
        return total
    finally:
        env.close()


def play_breakout(scenario_file: str, stem: str, seed: int, max_steps: int, frame_slot: Any, progress: Any) -> dict[str, float]:
    """Play one game with the greedy policy, drawing each frame into ``frame_slot`` at DISPLAY_FPS."""
    from shared.registry import get_kind

    policy = load_atari_policy(scenario_file, stem)
    loaded = load_scenario_cached(scenario_file)
    kind = get_kind(loaded.scenario.kind, str(loaded.source))
    env = kind.make_env(loaded, seed=seed, render_mode="rgb_array", training=False)
    total = 0.0
    steps = 0
    try:
        obs, _ = env.reset(seed=seed)
        next_frame = time.monotonic()
        for steps in range(1, max_steps + 1):
            obs, reward, terminated, truncated, info = env.step(policy(obs))
            total = float(info.get("episode_return", total + float(reward)))
            now = time.monotonic()
            if now < next_frame:
                time.sleep(next_frame - now)
            next_frame = max(now, next_frame) + 1.0 / DISPLAY_FPS
            frame_slot.image(env.render(), caption=t("game_ai.breakout.frame", step=steps, score=total), width=320)
            progress.progress(steps / max_steps, text=t("game_ai.breakout.progress", step=steps, total=max_steps))
            if terminated or truncated:
                break
    finally:
        env.close()
    return {"return": total, "steps": float(steps)}


def render_breakout(scenario_file: str, stem: str) -> None:
    """Draw the controls, the played frames, the return and the random baseline."""
    left, right = st.columns([2, 1])
    with right:
        seed = int(st.number_input(t("game_ai.seed"), min_value=0, max_value=10_000, value=0, step=1, key="breakout_seed"))
        max_steps = int(st.slider(t("game_ai.breakout.max_steps"), 20, 3000, 400, step=20, key="breakout_steps"))
        play = st.button(t("game_ai.breakout.play"), type="primary", key="breakout_play")
        results = st.container()
    with left:
        frame_slot = st.empty()
        progress = st.empty()
    if play:
        try:
            with st.spinner(t("game_ai.loading")):
                load_atari_policy(scenario_file, stem)
            outcome = play_breakout(scenario_file, stem, seed, max_steps, frame_slot, progress)
            baseline = random_game_return(scenario_file, seed, max_steps)
        except Exception as error:  # noqa: BLE001  (a failed episode becomes a message on the page)
            logger.exception("Breakout episode with checkpoint %s failed", stem)
            st.error(t("game_ai.episode_failed", error=f"{type(error).__name__}: {error}"), icon=":material/error:")
            return
        st.session_state["breakout_result"] = {**outcome, "random": baseline, "seed": seed, "max_steps": max_steps}
    result = st.session_state.get("breakout_result")
    if result:
        with results:
            st.metric(t("game_ai.breakout.return"), f"{result['return']:.0f}")
            st.metric(t("game_ai.breakout.random"), f"{result['random']:.0f}")
            st.caption(t("game_ai.breakout.summary", steps=int(result["steps"]), seed=result["seed"], max_steps=result["max_steps"]))


# ----- Connect Four -----


def new_connect_four_game() -> None:
    """Start an empty board; the agent moves first when the player chose to go second."""
    from apps.game_ai.connect_four import ConnectFourBatch

    st.session_state["c4_game"] = ConnectFourBatch(1)
    st.session_state["c4_result"] = None
    st.session_state["c4_last_agent_move"] = None
    st.session_state["c4_error"] = None
    st.session_state["c4_human"] = 1 if st.session_state.get("c4_agent_first") else 0
    if st.session_state["c4_human"] == 1:
        agent_move()


def agent_move() -> None:
    """Let the agent pick a column for the player to move and play it."""
    game = st.session_state["c4_game"]
    try:
        agent = load_connect_four_agent(st.session_state["c4_stem"])
        # The batch's planes are (2, 6, 7) from the mover's view; the agent takes PettingZoo's (6, 7, 2).
        planes = np.transpose(game.planes()[0], (1, 2, 0))
        column = agent.choose_move(planes, game.legal_mask()[0])
    except Exception as error:  # noqa: BLE001  (a broken checkpoint must not end the session)
        logger.exception("connect-four agent %s failed to move", st.session_state["c4_stem"])
        st.session_state["c4_error"] = f"{type(error).__name__}: {error}"
        return
    st.session_state["c4_last_agent_move"] = column
    record_move(column, mover="agent")


def record_move(column: int, mover: str) -> None:
    game = st.session_state["c4_game"]
    won, draw = game.play(np.array([0]), np.array([column]))
    if won[0]:
        st.session_state["c4_result"] = mover
    elif draw[0]:
        st.session_state["c4_result"] = "draw"


def human_move(column: int) -> None:
    """Play the person's column (a button callback), then the agent's reply move unless the game ended."""
    game = st.session_state["c4_game"]
    if st.session_state["c4_result"] is not None or not game.legal_mask()[0][column]:
        return
    record_move(column, mover="human")
    if st.session_state["c4_result"] is None:
        agent_move()


def board_image(board: np.ndarray, cell: int = 56) -> np.ndarray:
    """Draw the board as an RGB image: a blue frame with one disc per cell, row 0 on top."""
    rows, columns = board.shape
    image = np.empty((rows * cell, columns * cell, 3), dtype=np.uint8)
    image[:] = BOARD_COLOUR
    centre = (cell - 1) / 2
    yy, xx = np.mgrid[0:cell, 0:cell]
    disc = (yy - centre) ** 2 + (xx - centre) ** 2 <= (0.4 * cell) ** 2
    for row in range(rows):
        for column in range(columns):
            patch = image[row * cell : (row + 1) * cell, column * cell : (column + 1) * cell]
            patch[disc] = DISC_COLOURS[int(board[row, column])]
    return image


def render_connect_four(stem: str) -> None:
    """Draw the board, whose turn it is, the column buttons (full ones disabled), the result and a new-game button."""
    if st.session_state.get("c4_stem") != stem or "c4_game" not in st.session_state:
        st.session_state["c4_stem"] = stem
        with st.spinner(t("game_ai.loading")):
            new_connect_four_game()
    st.checkbox(t("game_ai.c4.agent_first"), key="c4_agent_first", on_change=new_connect_four_game)
    game = st.session_state["c4_game"]
    human = st.session_state["c4_human"]
    result = st.session_state["c4_result"]
    st.caption(t("game_ai.c4.colours", you=t(COLOUR_KEYS[human + 1]), agent=t(COLOUR_KEYS[2 - human])))

    if st.session_state.get("c4_error"):
        st.error(t("game_ai.c4.agent_failed", error=st.session_state["c4_error"]), icon=":material/error:")
    if result is None:
        st.info(t("game_ai.c4.your_turn"), icon=":material/touch_app:")
    elif result == "human":
        st.success(t("game_ai.c4.you_won"), icon=":material/emoji_events:")
    elif result == "agent":
        st.warning(t("game_ai.c4.agent_won"), icon=":material/smart_toy:")
    else:
        st.info(t("game_ai.c4.draw"), icon=":material/handshake:")
    last = st.session_state.get("c4_last_agent_move")
    if last is not None:
        st.caption(t("game_ai.c4.agent_played", column=last + 1))

    legal = game.legal_mask()[0]
    columns = st.columns(7)
    for column, slot in enumerate(columns):
        slot.button(
            f"↓ {column + 1}",
            key=f"c4_col_{column}",
            disabled=bool(result is not None or not legal[column]),
            on_click=human_move,
            args=(column,),
            help=t("game_ai.c4.drop", column=column + 1),
            width="stretch",
        )
    discs = int(np.count_nonzero(game.board[0]))
    st.image(board_image(game.board[0]), caption=t("game_ai.c4.discs", count=discs), width=7 * 56)
    st.button(t("game_ai.c4.new_game"), key="c4_new", on_click=new_connect_four_game, icon=":material/restart_alt:")


def render() -> None:
    """Draw the page: pick a game and a checkpoint, then the game's own section."""
    st.title(t("nav.game_ai"))
    st.markdown(t("game_ai.intro"))
    # The options are the translated labels. A translating format_func would run in AppTest's own
# process in English, so its labels would not match the session's.
    labels = {t(f"game_ai.game.{name}"): name for name in GAMES}
    game = labels[st.selectbox(t("game_ai.game"), list(labels), key="game_ai_game")]
    scenario_name, stem_name = GAMES[game]
    stem = st.text_input(t("game_ai.checkpoint"), value=str(CHECKPOINTS.relative_to(ROOT) / stem_name), key=f"game_ai_checkpoint_{game}")
    stem_path = Path(stem) if Path(stem).is_absolute() else ROOT / stem
    scenario_file = str(SCENARIOS / scenario_name)
    try:
        loaded = load_scenario_cached(scenario_file)
        st.caption(loaded.scenario.description)
    except Exception as error:  # noqa: BLE001  (a scenario that does not load is reported, not raised)
        logger.exception("scenario %s failed to load", scenario_file)
        st.error(t("game_ai.scenario_failed", file=scenario_name, error=str(error).splitlines()[0]), icon=":material/error:")
        return
    if not checkpoint_exists(str(stem_path)):
        st.error(t("game_ai.checkpoint_missing", path=stem), icon=":material/error:")
        return
    if game == "breakout":
        render_breakout(scenario_file, str(stem_path))
    elif game == "connect_four":
        render_connect_four(str(stem_path))
    else:
        st.info(t("game_ai.pistonball.note", scenario=Path(scenario_name).stem), icon=":material/info:")


if __name__ == "__main__":
    render()
