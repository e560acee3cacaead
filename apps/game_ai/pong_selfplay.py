"""Two-player Pong (PettingZoo ``pong_v3``) trained by self-play against a pool of past snapshots.

SuperSuit is not a dependency, so :class:`AtariParallelPreprocessing` applies the single-agent Atari
preprocessing to each agent of the parallel env. That is no-op starts, a frame skip of 4 with
max-pooling of the last two frames, grey-scale, 84x84 with ``cv2.INTER_AREA`` and a stack of 4
frames, oldest first.
:class:`PongSelfPlayEnv` then turns the game into a single-agent Gymnasium env: the learner plays
one paddle and an opponent policy, drawn at each reset from an :class:`OpponentPool` of frozen
copies of the learner, plays the other. The shared training loop, evaluation and checkpoints run
on that env unchanged. Evaluation plays against a uniformly random opponent and reports
``win_rate_vs_random``, or with ``settings.eval_opponent: heuristic`` against a ball-tracking
heuristic and reports ``win_rate_vs_heuristic``.

PettingZoo's Atari envs set ``repeat_action_probability`` to 0, so self-play has no sticky actions.
"""

from __future__ import annotations

import copy
import logging
import weakref
from collections import deque
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import ale_py
import cv2
import gymnasium as gym
import numpy as np
import torch
import pettingzoo
from pettingzoo import ParallelEnv
from pydantic import BaseModel, ConfigDict, Field

from shared.errors import ScenarioError, located
from shared.kinds import EpisodeTracker, GymKind, resolve_device
from shared.registry import register_kind

if TYPE_CHECKING:
    from shared.agents.base import Agent
    from shared.scenario import LoadedScenario

logger = logging.getLogger("scenariolab.apps.game_ai.pong_selfplay")

ALE_ROMS = Path(ale_py.__file__).parent / "roms"
PLAYERS = ("first_0", "second_0")
PETTINGZOO_ID = "atari/pong-v3"
NOOP = 0

# Console RAM addresses of two-player Pong, found by moving each paddle and watching the RAM.
BALL_Y_RAM = 54
PADDLE_Y_RAM = {"first_0": 51, "second_0": 50}


def make_pong_parallel_env(max_cycles: int = 108_000, render_mode: str | None = None) -> ParallelEnv:
    """Make PettingZoo's two-player ``pong_v3`` with grey-scale screens and the ROM shipped by ale-py.

    ``max_cycles`` counts emulator frames; 108000 is ALE v5's limit for single-agent games.
    """
    return pettingzoo.make(
        "parallel",
        PETTINGZOO_ID,
        obs_type="grayscale_image",
        max_cycles=max_cycles,
        render_mode=render_mode,
        auto_rom_install_path=str(ALE_ROMS),
    )


class AtariParallelPreprocessing(ParallelEnv):
    """The single-agent Atari preprocessing, applied to every agent of a PettingZoo Atari parallel env.

    Spaces:
        observation: per agent, ``Box(0, 255, (frame_stack, screen_size, screen_size), uint8)``,
        oldest frame first; agents in ``mirror_agents`` see the screen flipped left to right, so a
        policy that learned one side of the court sees the other side the same way.
        action: the wrapped env's per-agent ``Discrete`` action space.

    Rewards:
        The wrapped env's per-agent rewards, summed over the ``frame_skip`` frames of one step.

    Episode end:
        All agents end together when the wrapped env terminates or truncates one of them during a
        step's frames. A game that ends during the reset no-ops is reset again.
    """

    metadata = {"name": "pong_v3_atari_preprocessing", "render_modes": ["rgb_array"], "is_parallelizable": True}

    def __init__(
        self,
        env: ParallelEnv,
        *,
        frame_skip: int = 4,
        noop_max: int = 30,
        screen_size: int = 84,
        frame_stack: int = 4,
        mirror_agents: tuple[str, ...] = (),
    ):
        self.env = env
        self.frame_skip = frame_skip
        self.noop_max = noop_max
        self.screen_size = screen_size
        self.frame_stack = frame_stack
        self.mirror_agents = tuple(mirror_agents)
        self.possible_agents = list(env.possible_agents)
        self.agents: list[str] = []
        self.render_mode = getattr(env, "render_mode", None)
        self._space = gym.spaces.Box(0, 255, (frame_stack, screen_size, screen_size), np.uint8)
        self._stacks: dict[str, deque[np.ndarray]] = {}
        self.np_random = np.random.default_rng()

    @lru_cache(maxsize=None)
    def observation_space(self, agent: str) -> gym.Space:
        return self._space

    @lru_cache(maxsize=None)
    def action_space(self, agent: str) -> gym.Space:
        return self.env.action_space(agent)

    def _frame(self, screens: list[np.ndarray]) -> np.ndarray:
        """Max-pool the last two screens and resize to ``screen_size`` squared, like AtariPreprocessing."""
        screen = screens[-1] if len(screens) == 1 else np.maximum(screens[-2], screens[-1])
        return cv2.resize(np.asarray(screen, dtype=np.uint8).squeeze(-1), (self.screen_size, self.screen_size), interpolation=cv2.INTER_AREA)

    def _observations(self) -> dict[str, np.ndarray]:
        return {agent: np.stack(self._stacks[agent]) for agent in self.agents}

    def _push(self, frame: np.ndarray, fill: bool = False) -> None:
        for agent in self.possible_agents:
            view = frame[:, ::-1] if agent in self.mirror_agents else frame
            view = np.ascontiguousarray(view)
            if fill:
                self._stacks[agent] = deque([view] * self.frame_stack, maxlen=self.frame_stack)
            else:
                self._stacks[agent].append(view)

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
        if seed is not None:
            self.np_random = np.random.default_rng(seed)
        observations, infos = self.env.reset(seed=seed, options=options)
        noops = int(self.np_random.integers(1, self.noop_max + 1)) if self.noop_max > 0 else 0
        screens = [observations[self.possible_agents[0]]]
        for _ in range(noops):
            observations, _, terminations, truncations, _ = self.env.step({agent: NOOP for agent in self.env.agents})
            if any(terminations.values()) or any(truncations.values()) or not self.env.agents:
                observations, infos = self.env.reset()
            screens = [observations[self.possible_agents[0]]]
        self.agents = list(self.env.agents)
        self._push(self._frame(screens), fill=True)
        return self._observations(), {agent: dict(infos.get(agent, {})) for agent in self.agents}

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        live = list(self.agents)
        rewards = dict.fromkeys(live, 0.0)
        terminations = dict.fromkeys(live, False)
        truncations = dict.fromkeys(live, False)
        infos: dict[str, dict] = {agent: {} for agent in live}
        screens: list[np.ndarray] = []
        for _ in range(self.frame_skip):
            observations, step_rewards, step_terms, step_truncs, step_infos = self.env.step({agent: actions[agent] for agent in live if agent in actions})
            for agent in live:
                rewards[agent] += float(step_rewards.get(agent, 0.0))
                terminations[agent] = bool(step_terms.get(agent, False))
                truncations[agent] = bool(step_truncs.get(agent, False))
                infos[agent] = dict(step_infos.get(agent, {}))
            screens = (screens + [observations[live[0]]])[-2:]
            if any(terminations.values()) or any(truncations.values()):
                break
        self._push(self._frame(screens))
        observations = {agent: np.stack(self._stacks[agent]) for agent in live}
        if any(terminations.values()) or any(truncations.values()):
            # Pong ends for both players at once; a truncation at the frame limit also ends both.
            ended_by_termination = any(terminations.values())
            terminations = dict.fromkeys(live, ended_by_termination)
            truncations = dict.fromkeys(live, not ended_by_termination)
            self.agents = []
        return observations, rewards, terminations, truncations, infos

    def render(self) -> np.ndarray | None:
        return self.env.render()

    def close(self) -> None:
        self.env.close()


def tracking_action(ram: np.ndarray, player: str, offset: int = 8, dead_zone: int = 3) -> int:
    """Return the heuristic's action: move the paddle towards the ball's height, pressing FIRE to serve.

    ``offset`` aligns the paddle's RAM coordinate with the ball's. With 8, the heuristic won 21-0
    against a uniformly random player on either side (one game each, seed 0).
    """
    gap = int(ram[BALL_Y_RAM]) - (int(ram[PADDLE_Y_RAM[player]]) + offset)
    if gap < -dead_zone:
        return 4  # RIGHTFIRE: up
    if gap > dead_zone:
        return 5  # LEFTFIRE: down
    return 1  # FIRE


class PongSelfPlaySettings(BaseModel):
    """The ``settings:`` mapping of a self-play Pong scenario."""

    model_config = ConfigDict(extra="forbid")

    frame_skip: int = Field(4, ge=1, le=16, description="Emulator frames per agent step.")
    noop_max: int = Field(30, ge=0, le=1000, description="Maximum random NOOP frames after each reset.")
    screen_size: int = Field(84, ge=16, le=210, description="Side of the square grey-scale observation, in pixels.")
    frame_stack: int = Field(4, ge=1, le=16, description="Frames stacked on the first axis, oldest first.")
    max_cycles: int = Field(108_000, ge=1, description="Emulator frames per game before truncation.")
    learner_side: Literal["first_0", "second_0", "random"] = Field("random", description="Paddle the learner plays; random draws one per game.")
    mirror_second: bool = Field(True, description="Flip second_0's screen left to right, so both sides look alike.")
    snapshot_interval: int = Field(20_000, ge=1, description="Learner steps (all envs) between snapshots added to the opponent pool.")
    pool_size: int = Field(8, ge=1, le=100, description="Snapshots kept in the opponent pool; the oldest is dropped first.")
    latest_probability: float = Field(0.5, ge=0.0, le=1.0, description="Chance that a game's opponent is the newest snapshot.")
    eval_opponent: Literal["random", "heuristic"] = Field(
        "random", description="Evaluation opponent: uniformly random, or a heuristic that tracks the ball (metric win_rate_vs_<name>)."
    )


class OpponentPool:
    """Frozen copies of the learner's networks that training opponents are drawn from.

    All envs of one ``SyncVectorEnv`` share the pool, so one counter of learner steps decides when a
    new snapshot of the attached learner joins. Before a learner is attached the opponent is random.
    The learner built by :class:`PongSelfPlayKind` carries the pool (snapshots and step counter) in
    its checkpoint state, so ``--resume`` continues with the same opponents.
    """

    def __init__(self, settings: PongSelfPlaySettings):
        self.settings = settings
        self.learner: "Agent | None" = None
        self.snapshots: list[dict[str, dict[str, torch.Tensor]]] = []
        self.steps = 0

    def attach(self, learner: "Agent") -> None:
        """Start drawing opponents from ``learner``; its current weights are the first snapshot."""
        self.learner = learner
        self.snapshots = []
        self.add_snapshot()

    def add_snapshot(self) -> None:
        assert self.learner is not None
        state = {name: {key: value.detach().clone() for key, value in module.state_dict().items()} for name, module in self.learner.modules().items()}
        self.snapshots.append(state)
        if len(self.snapshots) > self.settings.pool_size:
            self.snapshots.pop(0)

    def count_step(self) -> None:
        self.steps += 1
        if self.learner is not None and self.steps % self.settings.snapshot_interval == 0:
            self.add_snapshot()

    def state(self) -> dict[str, Any]:
        """Return the step counter and the snapshots' weights, for a checkpoint."""
        return {"steps": self.steps, "snapshots": list(self.snapshots)}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state`: the same snapshots in the same order, and the step counter."""
        self.steps = int(state["steps"])
        self.snapshots = [{name: {key: value.clone() for key, value in module.items()} for name, module in snapshot.items()} for snapshot in state["snapshots"]]

    def draw(self, rng: np.random.Generator) -> dict[str, dict[str, torch.Tensor]] | None:
        """Return the newest snapshot with ``latest_probability``, else a uniformly drawn one; None when empty."""
        if not self.snapshots:
            return None
        if rng.random() < self.settings.latest_probability:
            return self.snapshots[-1]
        return self.snapshots[int(rng.integers(len(self.snapshots)))]

    def make_actor(self) -> "Agent":
        """Build an agent of the learner's class and config, to load snapshots into and act with."""
        assert self.learner is not None
        learner = self.learner
        actor = type(learner)(learner.observation_space, learner.action_space, copy.deepcopy(learner.config), num_envs=learner.num_envs, seed=learner.seed, device=learner.device)
        for module in actor.modules().values():
            module.eval()
        return actor


@lru_cache(maxsize=None)
def pool_carrying(agent_class: type["Agent"]) -> type["Agent"]:
    """Return a subclass of ``agent_class`` whose checkpoint state also contains its opponent pool.

    The shared trainer saves ``extra_state()`` and restores it with ``load_extra_state()`` on
    ``--resume``; the subclass adds the pool's snapshots and step counter there. The agent's name,
    networks and config are unchanged, so its checkpoints load wherever the base agent's do.
    """

    class PoolCarryingAgent(agent_class):  # type: ignore[valid-type, misc]
        opponent_pool: OpponentPool | None = None

        def extra_state(self) -> dict[str, Any]:
            state = super().extra_state()
            if self.opponent_pool is not None:
                state = {**state, "opponent_pool": self.opponent_pool.state()}
            return state

        def load_extra_state(self, state: dict[str, Any]) -> None:
            state = dict(state)
            pool_state = state.pop("opponent_pool", None)
            super().load_extra_state(state)
            if pool_state is not None and self.opponent_pool is not None:
                self.opponent_pool.load_state(pool_state)

    PoolCarryingAgent.__name__ = PoolCarryingAgent.__qualname__ = f"PoolCarrying{agent_class.__name__}"
    return PoolCarryingAgent


class PongSelfPlayEnv(gym.Env):
    """Two-player Pong seen by one learner, with the other paddle played by an opponent policy.

    Spaces:
        observation: ``Box(0, 255, (4, 84, 84), uint8)``, the learner's stacked frames, oldest first.
        action: ``Discrete(6)``: NOOP, FIRE, RIGHT, LEFT, RIGHTFIRE, LEFTFIRE (RIGHT moves the paddle up).

    Rewards:
        The learner's Pong reward: +1 when it scores, -1 when the opponent scores, and -1 when it
        does not serve within 2 seconds (PettingZoo's serve timer).

    Episode end:
        Terminated when the game ends (a player reaches 21); truncated at ``max_cycles`` frames
        or after ``max_episode_steps`` agent steps.
        The final step's info contains ``win``: 1 when the learner's return beats the opponent's,
        0.5 for a draw, 0 otherwise.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}

    def __init__(
        self,
        settings: PongSelfPlaySettings,
        pool: OpponentPool | None = None,
        render_mode: str | None = None,
        max_episode_steps: int | None = None,
        fixed_opponent: Literal["random", "heuristic"] = "random",
    ):
        self.settings = settings
        self.fixed_opponent = fixed_opponent
        self.pool = pool
        self.max_episode_steps = max_episode_steps
        self._steps = 0
        self.render_mode = render_mode
        mirror = ("second_0",) if settings.mirror_second else ()
        self.game = AtariParallelPreprocessing(
            make_pong_parallel_env(settings.max_cycles, render_mode),
            frame_skip=settings.frame_skip,
            noop_max=settings.noop_max,
            screen_size=settings.screen_size,
            frame_stack=settings.frame_stack,
            mirror_agents=mirror,
        )
        self.observation_space = self.game.observation_space(PLAYERS[0])
        self.action_space = self.game.action_space(PLAYERS[0])
        self.learner_id = PLAYERS[0]
        self.opponent_id = PLAYERS[1]
        self._opponent_actor: "Agent | None" = None
        self._opponent_uses_snapshot = False
        self._opponent_obs: np.ndarray | None = None
        self._returns = {player: 0.0 for player in PLAYERS}

    def _choose_opponent(self) -> None:
        snapshot = self.pool.draw(self.np_random) if self.pool is not None else None
        self._opponent_uses_snapshot = snapshot is not None
        if snapshot is None:
            return
        if self._opponent_actor is None:
            self._opponent_actor = self.pool.make_actor()
        for name, module in self._opponent_actor.modules().items():
            module.load_state_dict(snapshot[name])

    def _opponent_action(self) -> int:
        if self._opponent_uses_snapshot and self._opponent_actor is not None:
            return int(self._opponent_actor.act(self._opponent_obs[None], deterministic=False)[0])
        if self.fixed_opponent == "heuristic":
            return tracking_action(self.game.env.unwrapped.ale.getRAM(), self.opponent_id)
        return int(self.np_random.integers(self.action_space.n))

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if self.settings.learner_side == "random":
            self.learner_id = PLAYERS[int(self.np_random.integers(2))]
        else:
            self.learner_id = self.settings.learner_side
        self.opponent_id = PLAYERS[1] if self.learner_id == PLAYERS[0] else PLAYERS[0]
        game_seed = int(self.np_random.integers(2**31 - 1))
        observations, _ = self.game.reset(seed=game_seed)
        self._opponent_obs = observations[self.opponent_id]
        self._choose_opponent()
        self._returns = {player: 0.0 for player in PLAYERS}
        self._steps = 0
        return observations[self.learner_id], {"learner": self.learner_id}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        actions = {self.learner_id: int(action), self.opponent_id: self._opponent_action()}
        observations, rewards, terminations, truncations, _ = self.game.step(actions)
        if self.pool is not None:
            self.pool.count_step()
        for player in PLAYERS:
            self._returns[player] += rewards.get(player, 0.0)
        self._opponent_obs = observations[self.opponent_id]
        terminated = bool(terminations[self.learner_id])
        self._steps += 1
        truncated = bool(truncations[self.learner_id])
        if self.max_episode_steps is not None and self._steps >= self.max_episode_steps and not terminated:
            truncated = True
        info: dict[str, Any] = {"learner": self.learner_id}
        if terminated or truncated:
            info["opponent"] = "snapshot" if self._opponent_uses_snapshot else self.fixed_opponent
            mine, theirs = self._returns[self.learner_id], self._returns[self.opponent_id]
            if mine > theirs:
                info["win"] = 1.0
            elif mine == theirs:
                info["win"] = 0.5
            else:
                info["win"] = 0.0
        return observations[self.learner_id], float(rewards[self.learner_id]), terminated, truncated, info

    def render(self) -> np.ndarray | None:
        return self.game.render()

    def close(self) -> None:
        self.game.close()


class SelfPlayEpisodeTracker(EpisodeTracker):
    """Return, length and the win against the evaluation opponent, as ``win_rate_vs_<opponent>``."""

    def __init__(self, opponent: str = "random"):
        self.opponent = opponent

    def reset(self, env: gym.Env, obs: Any, info: dict[str, Any]) -> None:
        super().reset(env, obs, info)
        self.win = 0.0

    def step(self, env: gym.Env, action: Any, reward: float, terminated: bool, truncated: bool, info: dict[str, Any]) -> None:
        super().step(env, action, reward, terminated, truncated, info)
        if "win" in info:
            self.win = float(info["win"])

    def result(self) -> dict[str, float]:
        return {**super().result(), f"win_rate_vs_{self.opponent}": self.win}


class PongSelfPlayKind(GymKind):
    """PPO (or another shared agent) on two-player Pong against snapshots of itself."""

    name = "pong_selfplay"
    domain = "game_ai"
    description = "Two-player Pong (PettingZoo pong_v3) by self-play against a pool of past snapshots."
    settings_model = PongSelfPlaySettings
    perturbations = {}
    ENV_ID = "pettingzoo/pong_v3"

    def __init__(self) -> None:
        # One pool per loaded scenario: its training envs and its learner share it.
        self._pools: "weakref.WeakKeyDictionary[LoadedScenario, OpponentPool]" = weakref.WeakKeyDictionary()

    def env_ids(self) -> set[str] | None:
        return {self.ENV_ID}

    def settings_of(self, loaded: "LoadedScenario") -> PongSelfPlaySettings:
        settings = loaded.settings
        return settings if isinstance(settings, PongSelfPlaySettings) else PongSelfPlaySettings()

    def validate(self, loaded: "LoadedScenario") -> None:
        source = str(loaded.source)
        spec = loaded.scenario.env
        if spec is not None and spec.config:
            raise ScenarioError(located(source, "env.config", f"{self.ENV_ID} takes no config; use settings instead (keys: {', '.join(PongSelfPlaySettings.model_fields)})"))
        if spec is not None and spec.vectorization != "sync":
            raise ScenarioError(located(source, "env.vectorization", "must be 'sync': the envs share one opponent pool in this process"))
        super().validate(loaded)

    def make_env(
        self,
        loaded: "LoadedScenario",
        *,
        seed: int | None = None,
        render_mode: str | None = None,
        perturb: dict[str, float] | None = None,
        training: bool = True,
    ) -> gym.Env:
        """Build one self-play env; training envs draw opponents from the scenario's pool, evaluation plays ``settings.eval_opponent``."""
        settings = self.settings_of(loaded)
        pool = self._pools.setdefault(loaded, OpponentPool(settings)) if training else None
        spec = loaded.scenario.env
        max_steps = spec.max_episode_steps if spec is not None else None
        env = PongSelfPlayEnv(settings, pool, render_mode=render_mode, max_episode_steps=max_steps, fixed_opponent=settings.eval_opponent)
        if seed is not None:
            env.action_space.seed(seed)
        return env

    def build_agent(self, loaded: "LoadedScenario", env: Any, total_steps: int, seed: int) -> "Agent":
        """Build the scenario's agent with its opponent pool in its checkpoint state, and attach the pool."""
        from shared.agents import get_agent_class

        scenario = loaded.scenario
        agent_class = pool_carrying(get_agent_class(scenario.agent["name"], str(loaded.source)))
        agent = agent_class(
            getattr(env, "single_observation_space", env.observation_space),
            getattr(env, "single_action_space", env.action_space),
            loaded.agent_config,
            num_envs=getattr(env, "num_envs", 1),
            total_steps=total_steps,
            seed=seed,
            device=resolve_device(scenario.device),
        )
        pool = self._pools.get(loaded)
        if pool is not None:
            pool.attach(agent)
            agent.opponent_pool = pool
        return agent

    def episode_tracker(self, loaded: "LoadedScenario") -> EpisodeTracker:
        return SelfPlayEpisodeTracker(self.settings_of(loaded).eval_opponent)


def register() -> None:
    """Register the ``pong_selfplay`` scenario kind."""
    register_kind(PongSelfPlayKind())
