"""Stepping a Gymnasium vector env with next-step autoreset, for every agent and the training loop.

Gymnasium 1.x vector envs (``AutoresetMode.NEXT_STEP``) reset one step late. On the step where an
episode ends they return the *final* observation with ``terminated`` or ``truncated`` set; on the
following step they reset, return the first observation of the next episode with reward 0, and
ignore the action. :class:`VectorCollector` marks that following step ``valid = False`` so buffers,
returns and losses leave it out, and counts ``global_step`` in valid environment steps only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

logger = logging.getLogger("scenariolab.rollout")


@dataclass
class StepBatch:
    """One vector step. ``obs`` is what the action was chosen on; ``next_obs`` is what the env returned."""

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    costs: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    next_obs: np.ndarray
    valid: np.ndarray
    infos: dict[str, Any]


@dataclass
class EpisodeRecord:
    """A finished training episode, for ``charts/episodic_return`` and friends."""

    global_step: int
    episode_return: float
    length: int
    cost: float


def _info_array(infos: dict[str, Any], key: str, num_envs: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Return (values, mask) for a per-env info key of a vector env, or None if no env set it."""
    if key not in infos:
        return None
    values = np.asarray(infos[key])
    mask = np.asarray(infos.get(f"_{key}", np.ones(num_envs, dtype=bool)), dtype=bool)
    if values.shape[:1] != (num_envs,):
        return None
    return values, mask


class VectorCollector:
    """Owns a vector env, its current observation and the autoreset and episode bookkeeping."""

    def __init__(self, envs: gym.vector.VectorEnv, seed: int):
        self.envs = envs
        self.num_envs = envs.num_envs
        self.seed = seed
        obs, infos = envs.reset(seed=seed)
        self.obs = obs
        self.prev_done = np.zeros(self.num_envs, dtype=bool)
        self.global_step = 0
        self.episode_returns = np.zeros(self.num_envs, dtype=np.float64)
        self.episode_lengths = np.zeros(self.num_envs, dtype=np.int64)
        self.episode_costs = np.zeros(self.num_envs, dtype=np.float64)
        self.game_score_envs = np.zeros(self.num_envs, dtype=bool)
        self.completed: list[EpisodeRecord] = []
        self._mark_game_score_envs(infos)

    def step(self, actions: np.ndarray) -> StepBatch:
        """Step every env once and update the bookkeeping; see the module docstring for ``valid``."""
        next_obs, rewards, terminated, truncated, infos = self.envs.step(actions)
        valid = ~self.prev_done
        rewards = np.asarray(rewards, dtype=np.float32)
        terminated = np.asarray(terminated, dtype=bool)
        truncated = np.asarray(truncated, dtype=bool)
        cost_info = _info_array(infos, "cost", self.num_envs)
        costs = np.where(cost_info[1], cost_info[0], 0.0).astype(np.float32) if cost_info else np.zeros(self.num_envs, np.float32)

        self.global_step += int(valid.sum())
        self.episode_returns += np.where(valid, rewards, 0.0)
        self.episode_lengths += valid
        self.episode_costs += np.where(valid, costs, 0.0)
        self._record_game_scores(infos)
        ended = (terminated | truncated) & valid
        for env in np.flatnonzero(ended):
            if not self.game_score_envs[env]:
                self.completed.append(
                    EpisodeRecord(self.global_step, float(self.episode_returns[env]), int(self.episode_lengths[env]), float(self.episode_costs[env]))
                )
            self.episode_returns[env] = 0.0
            self.episode_lengths[env] = 0
            self.episode_costs[env] = 0.0

        batch = StepBatch(self.obs, actions, rewards, costs, terminated, truncated, next_obs, valid, infos)
        self.prev_done = terminated | truncated
        self.obs = next_obs
        return batch

    def _mark_game_score_envs(self, infos: dict[str, Any]) -> None:
        """Note envs whose reset info sets ``reports_game_score``: their episodes are logged only from ``episode_return``."""
        marks = _info_array(infos, "reports_game_score", self.num_envs)
        if marks is not None:
            self.game_score_envs |= marks[1] & marks[0].astype(bool)

    def _record_game_scores(self, infos: dict[str, Any]) -> None:
        """Use ``info["episode_return"]`` where an env reports the score of a whole game itself."""
        self._mark_game_score_envs(infos)
        scores = _info_array(infos, "episode_return", self.num_envs)
        if scores is None:
            return
        lengths = _info_array(infos, "episode_length", self.num_envs)
        values, mask = scores
        for env in np.flatnonzero(mask):
            self.game_score_envs[env] = True
            length = int(lengths[0][env]) if lengths is not None and lengths[1][env] else int(self.episode_lengths[env])
            self.completed.append(EpisodeRecord(self.global_step, float(values[env]), length, float(self.episode_costs[env])))

    def pop_episodes(self) -> list[EpisodeRecord]:
        """Return and clear the episodes finished since the last call."""
        episodes, self.completed = self.completed, []
        return episodes

    # Resume support ---------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Return the collector's state, with the envs' own state where they can be snapshotted."""
        return {
            "obs": np.asarray(self.obs),
            "prev_done": self.prev_done.copy(),
            "global_step": self.global_step,
            "episode_returns": self.episode_returns.copy(),
            "episode_lengths": self.episode_lengths.copy(),
            "episode_costs": self.episode_costs.copy(),
            "game_score_envs": self.game_score_envs.copy(),
            "envs": snapshot_vector_env(self.envs),
        }

    def load_state(self, state: dict[str, Any]) -> bool:
        """Restore :meth:`state`; return True when the envs were restored exactly.

        When an env cannot be snapshotted, the envs are reset with a seed derived from the run seed
        and the step count, and the episodes in progress are dropped. That resumed run then differs
        from an uninterrupted one.
        """
        self.global_step = int(state["global_step"])
        self.game_score_envs = np.asarray(state["game_score_envs"], dtype=bool).copy()
        if state.get("envs") is not None and restore_vector_env(self.envs, state["envs"]):
            self.obs = np.asarray(state["obs"]).copy()
            self.prev_done = np.asarray(state["prev_done"], dtype=bool).copy()
            self.episode_returns = np.asarray(state["episode_returns"], dtype=np.float64).copy()
            self.episode_lengths = np.asarray(state["episode_lengths"], dtype=np.int64).copy()
            self.episode_costs = np.asarray(state["episode_costs"], dtype=np.float64).copy()
            return True
        logger.warning("these envs cannot be snapshotted; resuming from freshly reset envs, so the run is not bit-identical")
        self.obs, _ = self.envs.reset(seed=self.seed + self.global_step)
        self.prev_done[:] = False
        self.episode_returns[:] = 0.0
        self.episode_lengths[:] = 0
        self.episode_costs[:] = 0.0
        return False


# Env snapshots ------------------------------------------------------------------------------------
# Only envs whose whole state is plain numbers, arrays and numpy generators can be snapshotted without
# pickling: Gymnasium's classic-control envs, and any env whose unwrapped class defines
# ``get_state() -> dict`` and ``set_state(dict)`` with JSON-compatible values and numpy arrays.

_SNAPSHOT_MODULES = ("gymnasium.envs.classic_control",)
_UNCAPTURED = ("screen", "screens", "surf", "clock", "render_mode", "spec", "metadata")  # rendering and registry details


def _capturable(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str, np.integer, np.floating, np.bool_)):
        return True
    if isinstance(value, np.ndarray):
        return value.dtype.kind in "biuf"
    if isinstance(value, np.random.Generator):
        return True
    if isinstance(value, (tuple, list)):
        return all(isinstance(v, (bool, int, float, np.integer, np.floating)) for v in value)
    return False


def _capture(value: Any) -> Any:
    if isinstance(value, np.random.Generator):
        return {"__generator__": value.bit_generator.state}
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, tuple):
        return {"__tuple__": list(value)}
    return value


def _layers(env: gym.Env) -> list[Any]:
    layers = [env]
    while isinstance(layers[-1], gym.Wrapper):
        layers.append(layers[-1].env)
    return layers


def snapshot_vector_env(envs: gym.vector.VectorEnv) -> dict[str, Any] | None:
    """Capture a SyncVectorEnv and its sub-envs, or a native classic-control vector env; None if any part cannot be captured."""
    if type(envs.unwrapped).__module__.startswith(_SNAPSHOT_MODULES):
        native = envs.unwrapped
        if not all(_capturable(v) or k in _UNCAPTURED for k, v in vars(native).items() if not k.endswith("_space")):
            return None
        return {"native": {k: _capture(v) for k, v in vars(native).items() if _capturable(v)}}
    if not isinstance(envs, gym.vector.SyncVectorEnv):
        return None
    vector_state = {k: _capture(v) for k, v in vars(envs).items() if k.startswith("_") and _capturable(v)}
    sub_states = []
    for env in envs.envs:
        layers = _layers(env)
        base = layers[-1]
        if hasattr(base, "get_state") and hasattr(base, "set_state"):
            base_state = {"__custom__": base.get_state()}
        elif type(base).__module__.startswith(_SNAPSHOT_MODULES):
            if not all(_capturable(v) or k in _UNCAPTURED for k, v in vars(base).items() if not k.endswith("_space")):
                return None
            base_state = {k: _capture(v) for k, v in vars(base).items() if _capturable(v)}
        else:
            return None
        wrapper_states = [{k: _capture(v) for k, v in vars(layer).items() if _capturable(v)} for layer in layers[:-1]]
        sub_states.append({"base": base_state, "wrappers": wrapper_states})
    return {"vector": vector_state, "envs": sub_states}


def _restore_attributes(target: Any, state: dict[str, Any]) -> None:
    for key, value in state.items():
        if isinstance(value, dict) and "__generator__" in value:
            generator = getattr(target, key)
            generator.bit_generator.state = value["__generator__"]
        elif isinstance(value, dict) and "__tuple__" in value:
            setattr(target, key, tuple(value["__tuple__"]))
        elif isinstance(value, np.ndarray):
            setattr(target, key, value.copy())
        else:
            setattr(target, key, value)


def restore_vector_env(envs: gym.vector.VectorEnv, state: dict[str, Any]) -> bool:
    """Restore :func:`snapshot_vector_env`'s capture; return False if the env layout differs."""
    if "native" in state:
        if not type(envs.unwrapped).__module__.startswith(_SNAPSHOT_MODULES):
            return False
        _restore_attributes(envs.unwrapped, state["native"])
        return True
    if not isinstance(envs, gym.vector.SyncVectorEnv) or len(state["envs"]) != len(envs.envs):
        return False
    for env, sub_state in zip(envs.envs, state["envs"]):
        layers = _layers(env)
        if len(layers) - 1 != len(sub_state["wrappers"]):
            return False
        for layer, layer_state in zip(layers[:-1], sub_state["wrappers"]):
            _restore_attributes(layer, layer_state)
        base_state = sub_state["base"]
        if "__custom__" in base_state:
            layers[-1].set_state(base_state["__custom__"])
        else:
            _restore_attributes(layers[-1], base_state)
    _restore_attributes(envs, state["vector"])
    return True
