"""Single-agent Atari scenarios (ALE v5 through Gymnasium) with the DQN-paper preprocessing.

Frame skipping: the ALE env is made with ``frameskip=1`` and Gymnasium's ``AtariPreprocessing``
repeats each action for ``frame_skip=4`` emulator frames and max-pools the last two, so the agent
acts every 4 frames, as in the DQN and PPO Atari papers. Sticky actions keep the v5 default
``repeat_action_probability=0.25``, which ale-py takes from Machado et al., 2018. ALE applies it on
every emulator frame, so moving the frame skip from the env into the wrapper does not change it.
A scenario may set ``env.config.repeat_action_probability: 0.0`` to match CleanRL's NoFrameskip-v4
runs, or perturb it at evaluation with ``--perturb sticky_actions=LEVEL``.

Wrapper order, innermost first (see :func:`wrap_atari`)::

    ALE env (frameskip=1) -> AtariPreprocessing (no-op starts, skip 4, 84x84 grey)
    -> TimeLimit (agent steps, optional) -> RecordEpisodeStatistics (raw score of the whole game)
    -> EpisodicLifeWrapper (training) -> FireResetWrapper -> ClipReward to [-1, 1] (training)
    -> FrameStackObservation(4) -> GameEndInfo (info["episode_return"], info["episode_length"])

``env.max_episode_steps`` and ``info["episode_length"]`` count agent steps of 4 frames, including
the FIRE steps that FireResetWrapper takes by itself.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import ale_py
import gymnasium as gym
import numpy as np
from gymnasium.wrappers import (
    AtariPreprocessing,
    ClipReward,
    FrameStackObservation,
    RecordEpisodeStatistics,
    RecordVideo,
    TimeLimit,
)
from pydantic import BaseModel, ConfigDict, Field

from apps.game_ai.atari_wrappers import EpisodicLifeWrapper, FireResetWrapper, GameEndInfo, has_fire_action
from shared.errors import ScenarioError, located
from shared.kinds import EpisodeTracker, GymKind, Perturbation
from shared.registry import register_kind, unknown_choice

if TYPE_CHECKING:
    from shared.scenario import LoadedScenario

logger = logging.getLogger("scenariolab.apps.game_ai.atari")

gym.register_envs(ale_py)
# The emulator prints a banner on stderr for every new ALE instance; keep stderr for errors only.
ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)


class AtariSettings(BaseModel):
    """The ``settings:`` mapping of an Atari scenario: preprocessing applied on top of the ALE env."""

    model_config = ConfigDict(extra="forbid")

    frame_skip: int = Field(4, ge=1, le=16, description="Emulator frames per agent step (AtariPreprocessing).")
    noop_max: int = Field(30, ge=0, le=1000, description="Maximum random NOOP frames after each reset.")
    screen_size: int = Field(84, ge=16, le=210, description="Side of the square grey-scale observation, in pixels.")
    frame_stack: int = Field(4, ge=1, le=16, description="Frames stacked on the first axis, oldest first.")
    terminal_on_life_loss: bool = Field(True, description="End training episodes at each lost life (training only).")
    clip_rewards: bool = Field(True, description="Clip training rewards to [-1, 1] (training only).")
    fire_reset: bool = Field(True, description="Press FIRE at the start of each game and life where action 1 is FIRE.")


SETTINGS_DEFAULTS = AtariSettings()


def atari_env_ids() -> list[str]:
    """Return the registered ALE v5 env ids (``ALE/Pong-v5``, ``ALE/Breakout-v5``, ...)."""
    return sorted(env_id for env_id in gym.registry if env_id.startswith("ALE/") and env_id.endswith("-v5"))


def make_base_env(env_id: str, config: dict[str, Any], *, render_mode: str | None = None, source: str | None = None) -> gym.Env:
    """Make the raw ALE env with ``frameskip=1`` unless ``config`` sets it; raise ScenarioError on bad input."""
    kwargs = {"frameskip": 1, **config}
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    try:
        return gym.make(env_id, **kwargs)
    except gym.error.NameNotFound:
        raise ScenarioError(unknown_choice(source, "env.id", env_id, atari_env_ids())) from None
    except TypeError as error:
        message = str(error).split(" was raised from")[0]
        raise ScenarioError(located(source, "env.config", f"{env_id} rejected its arguments: {message}")) from None
    except (gym.error.Error, OSError) as error:
        # ale-py raises gymnasium.error.Error for an unsupported ROM and OSError (FileNotFoundError,
        # NotADirectoryError) when the ROM file or the ALE_ROMS_DIR folder is missing or corrupt.
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ScenarioError(located(source, "env.id", f"cannot load the ROM of {env_id}: {reason}")) from None


def wrap_atari(
    env: gym.Env,
    settings: AtariSettings = SETTINGS_DEFAULTS,
    *,
    training: bool,
    max_episode_steps: int | None = None,
) -> gym.Env:
    """Apply the Atari preprocessing to a raw ALE env made with ``frameskip=1``.

    Spaces:
        observation: ``Box(0, 255, (frame_stack, screen_size, screen_size), uint8)``, grey-scale
        frames with the oldest first; ``(4, 84, 84)`` by default.
        action: the game's minimal ``Discrete`` action set (6 for Pong, 4 for Breakout).

    Rewards:
        The game's score change over the ``frame_skip`` frames of a step. With ``training=True``
        and ``clip_rewards`` they are clipped to [-1, 1]; evaluation returns them raw.

    Episode end:
        Terminated when the game ends, and with ``training=True`` and ``terminal_on_life_loss``
        also at each lost life (the next reset then continues the same game). Truncated at ALE's
        frame limit or at ``max_episode_steps`` agent steps. The step that ends the game reports its
        raw, unclipped score of all lives in ``info["episode_return"]`` and its length in agent
        steps in ``info["episode_length"]``.
    """
    env = AtariPreprocessing(
        env,
        noop_max=settings.noop_max,
        frame_skip=settings.frame_skip,
        screen_size=settings.screen_size,
        terminal_on_life_loss=False,
        grayscale_obs=True,
        scale_obs=False,
    )
    if max_episode_steps is not None:
        env = TimeLimit(env, max_episode_steps=max_episode_steps)
    env = RecordEpisodeStatistics(env)
    if training and settings.terminal_on_life_loss:
        env = EpisodicLifeWrapper(env)
    if settings.fire_reset and has_fire_action(env):
        env = FireResetWrapper(env, fire_on_life_loss=not (training and settings.terminal_on_life_loss))
    if training and settings.clip_rewards:
        env = ClipReward(env, -1.0, 1.0)
    env = FrameStackObservation(env, settings.frame_stack)
    return GameEndInfo(env)


class AtariEpisodeTracker(EpisodeTracker):
    """Return and length of one evaluation game, taken from ``info["episode_return"]`` when reported.

    The summed step rewards miss the frames that wrappers play inside ``reset`` (FIRE steps), so
    the game's own total from its last step replaces the sum.
    """

    def step(self, env: gym.Env, action: Any, reward: float, terminated: bool, truncated: bool, info: dict[str, Any]) -> None:
        super().step(env, action, reward, terminated, truncated, info)
        if "episode_return" in info:
            self.episode_return = float(info["episode_return"])
            self.episode_length = int(info["episode_length"])


class AtariKind(GymKind):
    """Single-agent ALE v5 games trained by a shared agent (DQN, Double DQN, PPO) on stacked frames."""

    name = "atari"
    domain = "game_ai"
    description = "Single-agent Atari 2600 games (ALE v5) with the DQN-paper preprocessing."
    settings_model = AtariSettings
    perturbations = {
        "sticky_actions": Perturbation(
            "sticky_actions", 0.0, 1.0, "Probability that the emulator repeats the previous action on each frame (repeat_action_probability)."
        ),
    }

    def env_ids(self) -> set[str] | None:
        return set(atari_env_ids())

    def settings_of(self, loaded: "LoadedScenario") -> AtariSettings:
        settings = loaded.settings
        return settings if isinstance(settings, AtariSettings) else SETTINGS_DEFAULTS

    def validate(self, loaded: "LoadedScenario") -> None:
        from shared.agents import get_agent_class

        scenario = loaded.scenario
        source = str(loaded.source)
        if scenario.env is None:
            raise ScenarioError(located(source, "env", f"required for kind {self.name!r}"))
        self.validate_env_id(scenario.env.id, source)
        self.validate_perturb(scenario.perturb, source)
        config = scenario.env.config
        settings = self.settings_of(loaded)
        frameskip = config.get("frameskip", 1)
        if not isinstance(frameskip, int) or frameskip < 1:
            raise ScenarioError(located(source, "env.config.frameskip", f"must be a positive integer, got {frameskip!r}"))
        if frameskip != 1 and settings.frame_skip != 1:
            raise ScenarioError(
                located(
                    source,
                    "env.config.frameskip",
                    f"is {frameskip} while settings.frame_skip is {settings.frame_skip}; set one of them to 1 "
                    "(the agent acts every frameskip x frame_skip emulator frames)",
                )
            )

        base = make_base_env(scenario.env.id, config, source=source)
        try:
            base_action_space = base.action_space
            continuous = bool(config.get("continuous", False))
            if loaded.agent_config is not None:
                reason = get_agent_class(scenario.agent["name"], source).check_spaces(base.observation_space, base_action_space)
                if reason:
                    raise ScenarioError(located(source, "agent.name", reason))
        finally:
            base.close()
        if continuous:
            # Limitation: AtariPreprocessing's no-op starts step the env with the integer action 0,
            # which a continuous ALE action space does not accept.
            raise ScenarioError(located(source, "env.config.continuous", "continuous Atari actions are not supported; allowed: false"))

        # Building the preprocessed env once catches settings the wrappers reject.
        self.make_env(loaded, training=False).close()

    def make_env(
        self,
        loaded: "LoadedScenario",
        *,
        seed: int | None = None,
        render_mode: str | None = None,
        perturb: dict[str, float] | None = None,
        training: bool = True,
    ) -> gym.Env:
        """Build one preprocessed Atari env; ``training=False`` plays whole games with raw rewards."""
        spec = loaded.scenario.env
        assert spec is not None
        config = dict(spec.config)
        levels = {**loaded.scenario.perturb, **(perturb or {})}
        if "sticky_actions" in levels:
            config["repeat_action_probability"] = float(levels["sticky_actions"])
        base = make_base_env(spec.id, config, render_mode=render_mode, source=str(loaded.source))
        env = wrap_atari(base, self.settings_of(loaded), training=training, max_episode_steps=spec.max_episode_steps)
        if seed is not None:
            env.action_space.seed(seed)
        return env

    def episode_tracker(self, loaded: "LoadedScenario") -> EpisodeTracker:
        return AtariEpisodeTracker()


def record_episode(
    loaded: "LoadedScenario",
    policy: Callable[[np.ndarray], Any],
    path: str | Path,
    *,
    seed: int = 0,
    perturb: dict[str, float] | None = None,
    max_steps: int = 27_000,
) -> Path:
    """Play one evaluation game with ``policy`` and save it as an H.264 MP4 or a GIF (by ``path``'s suffix).

    Works for any single-env kind with an ``rgb_array`` render mode (``atari``, ``pong_selfplay``).
    ``policy`` maps one stacked observation to one action. Gymnasium's ``RecordVideo`` captures the
    full-colour screen after every agent step, so the video runs at 60 / frame_skip frames per
    second to play at the game's own speed. Returns the written path.
    """
    from shared.registry import get_kind

    path = Path(path)
    if path.suffix.lower() not in (".mp4", ".gif"):
        raise ScenarioError(located(str(path), None, "unsupported video format; allowed suffixes: .mp4, .gif"))
    kind = get_kind(loaded.scenario.kind, str(loaded.source))
    if not isinstance(kind, GymKind):
        raise ScenarioError(located(str(loaded.source), "kind", f"kind {kind.name!r} has no single env to record"))
    frame_skip = getattr(loaded.settings, "frame_skip", 4)
    fps = max(1, round(60 / frame_skip))
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="scenariolab-video-") as folder:
        env = kind.make_env(loaded, render_mode="rgb_array", perturb=perturb, training=False)
        env = RecordVideo(env, str(Path(folder) / "recording"), episode_trigger=lambda episode: episode == 0, name_prefix="episode", fps=fps)
        try:
            obs, _ = env.reset(seed=seed)
            for _ in range(max_steps):
                obs, _, terminated, truncated, _ = env.step(policy(obs))
                if terminated or truncated:
                    break
        finally:
            env.close()
        recorded = Path(folder) / "recording" / "episode-episode-0.mp4"
        if path.suffix.lower() == ".gif":
            _mp4_to_gif(recorded, path, fps)
        else:
            shutil.move(str(recorded), path)
    return path


def _mp4_to_gif(source: Path, target: Path, fps: int) -> None:
    """Re-encode an MP4 as a looping GIF with imageio."""
    import imageio.v2 as imageio

    reader = imageio.get_reader(str(source))
    try:
        frames = [frame for frame in reader]
    finally:
        reader.close()
    imageio.mimsave(str(target), frames, duration=1000 / fps, loop=0)


def register() -> None:
    """Register the ``atari`` scenario kind."""
    register_kind(AtariKind())
