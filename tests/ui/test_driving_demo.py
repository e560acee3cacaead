"""The driving demo API behind the Driving page: rendered frames, the agents of each scenario, rejected inputs."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from apps.driving.demo import DEMO_SCENARIOS, agent_choices, perturbations_for, play_episode
from shared.errors import ScenarioError
from shared.ui import i18n

# highway-env's drawing colours (RGB), from highway_env/road/graphics.py and vehicle/graphics.py.
ROAD_GREY = (100, 100, 100)
LANE_WHITE = (255, 255, 255)
EGO_GREEN = (50, 200, 0)
TRAFFIC_BLUE = (100, 200, 255)


def pixel_counts(frame: np.ndarray) -> dict[tuple[int, ...], int]:
    colours, counts = np.unique(frame.reshape(-1, 3), axis=0, return_counts=True)
    return {tuple(int(c) for c in colour): int(count) for colour, count in zip(colours, counts)}


def test_highway_frame_shows_road_and_vehicles() -> None:
    from apps.driving.envs import KIND
    from shared.scenario import load_scenario

    # tests/conftest.py sets the variable that made highway-env skip all drawing (all-black frames).
    assert os.environ["SDL_VIDEODRIVER"] == "dummy"
    env = KIND.make_env(load_scenario("highway_ppo"), seed=0, render_mode="rgb_array", training=False)
    try:
        env.reset(seed=0)
        frame = env.render()
    finally:
        env.close()

    assert frame.shape == (150, 600, 3)
    assert frame.dtype == np.uint8
    counts = pixel_counts(frame)
    # Measured with highway-env 1.12 and pygame-ce 2.5.8: 7 colours, standard deviation 25.5, road
    # grey on 86,730 of the 90,000 pixels. A black frame has 1 colour and deviation 0.
    assert len(counts) >= 5
    assert frame.std() > 20.0
    assert max(counts, key=counts.__getitem__) == ROAD_GREY
    assert counts[LANE_WHITE] > 1000
    assert counts[EGO_GREEN] > 100
    assert counts[TRAFFIC_BLUE] > 100


@pytest.mark.parametrize(
    ("scenario", "offered", "shielded", "missing"),
    [
        ("highway", ["shielded_ppo", "ppo_lagrangian", "ppo", "dqn", "idm", "random"], ["shielded_ppo"], {}),
        ("merge", ["ppo", "idm", "random"], ["ppo"], {"shielded_ppo": "not_shipped", "ppo_lagrangian": "not_shipped", "dqn": "not_shipped"}),
        ("roundabout", ["ppo", "idm", "random"], ["ppo"], {"shielded_ppo": "not_shipped", "ppo_lagrangian": "not_shipped", "dqn": "not_shipped"}),
        ("intersection", ["ppo", "idm", "random"], ["ppo"], {"shielded_ppo": "not_shipped", "ppo_lagrangian": "not_shipped", "dqn": "not_shipped"}),
        (
            "racetrack",
            ["ppo", "random"],
            [],
            {"shielded_ppo": "not_shipped", "ppo_lagrangian": "not_shipped", "dqn": "not_shipped", "idm": "needs_meta_actions"},
        ),
    ],
)
def test_agent_choices_per_scenario(scenario: str, offered: list[str], shielded: list[str], missing: dict[str, str]) -> None:
    choices = agent_choices(scenario)
    assert [choice.agent for choice in choices if choice.available] == offered
    assert [choice.agent for choice in choices if choice.available and choice.shield] == shielded
    assert {choice.agent: choice.unavailable for choice in choices if not choice.available} == missing
    for choice in choices:
        if choice.available:
            assert choice.scenario_file is not None
            assert choice.scenario_file.is_file()


def test_scenarios_cover_shipped_checkpoints() -> None:
    from apps.driving.demo import SCENARIOS_DIR

    shipped = {path.stem for path in (SCENARIOS_DIR.parents[1] / "apps" / "driving" / "checkpoints").glob("*.safetensors")}
    offered = {file.removesuffix(".yaml") for demo in DEMO_SCENARIOS.values() for file in demo.learned.values()}
    assert offered == shipped


def test_unavailable_agent_is_rejected() -> None:
    with pytest.raises(ScenarioError) as raised:
        next(play_episode("merge", "ppo_lagrangian"))
    assert str(raised.value) == "demo: agent: 'ppo_lagrangian' ships no checkpoint for scenario 'merge'; available: ppo, idm, random"


def test_unknown_scenario_is_rejected() -> None:
    with pytest.raises(ScenarioError) as raised:
        next(play_episode("parking", "ppo"))
    assert str(raised.value) == "demo: scenario: unknown value 'parking'; allowed: highway, merge, roundabout, intersection, racetrack"


def test_racetrack_has_no_observation_perturbations() -> None:
    assert list(perturbations_for("highway")) == ["obs_noise", "obs_dropout", "density", "aggressive", "action_delay"]
    assert list(perturbations_for("racetrack")) == ["density", "aggressive", "action_delay"]
    with pytest.raises(ScenarioError, match=r"^demo: perturb\.obs_noise: needs a Kinematics observation, but env\.config\.observation\.type is 'OccupancyGrid'$"):
        next(play_episode("racetrack", "random", {"obs_noise": 0.1}))


def test_merge_episode_with_shielded_ppo() -> None:
    steps = list(play_episode("merge", "ppo", seed=2, max_steps=3))
    assert [panel["step"] for _, panel in steps] == [0, 1, 2, 3]
    frame, panel = steps[-1]
    assert frame.shape == (150, 600, 3)
    assert frame.std() > 20.0
    assert panel["speed"] > 0
    assert 0.0 <= panel["ttc"] <= 10.0
    assert panel["episode_cost"] >= 0.0
    assert isinstance(panel["shield_interventions"], int)
    assert panel["shield_interventions"] >= 0


def test_unavailable_reasons_are_translated() -> None:
    reasons = ("not_shipped", "checkpoint_missing", "needs_meta_actions")
    for language in i18n.LANGUAGES:
        catalogue = json.loads((i18n.APPS_ROOT / "driving" / "locales" / f"{language}.json").read_text(encoding="utf-8"))
        assert [reason for reason in reasons if f"driving.unavailable.{reason}" not in catalogue] == [], language
