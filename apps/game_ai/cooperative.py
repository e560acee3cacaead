"""Cooperative multi-agent PPO on PettingZoo's Pistonball with one parameter-shared policy.

Pistonball's own observation is a 457x120 RGB crop per piston (164 KB each, 20 pistons by
default), which is far too heavy for CPU training. :class:`PistonballVectorEnv` therefore reads a
9-number vector per piston from the simulator state: its height, its neighbours' heights, and
the ball's position and velocity relative to it. The adapter passes PettingZoo's ``parallel_api_test``.

The learner keeps one slot per possible agent. An agent that leaves mid-episode has its slot
padded with zeros and its transitions masked out of GAE and the loss until its env resets. Envs
whose agents come and go (any PettingZoo parallel env with flat observations and one shared
discrete action space) therefore train without crashing.
"""

from __future__ import annotations

import functools
import logging
import math
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import gymnasium
import numpy as np
import torch
from pettingzoo import ParallelEnv
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from shared.agents.ppo import ppo_loss
from shared.buffers import compute_gae
from shared.checkpoints import flatten_state, load_checkpoint, load_run_checkpoint, save_checkpoint
from shared.errors import CheckpointError, ScenarioError, located
from shared.kinds import EvalOptions, Perturbation, RunOptions, ScenarioKind
from shared.logging import MetricLogger
from shared.networks import MLP
from shared.registry import register_kind, unknown_choice
from shared.report import write_report
from shared.rundir import metrics_summary
from shared.stats import aggregate
from shared.training import rng_state, seed_everything, set_rng_state

if TYPE_CHECKING:
    from shared.rundir import RunDir
    from shared.scenario import LoadedScenario

logger = logging.getLogger("scenariolab.game_ai.cooperative")

PISTONBALL_ID = "pistonball_v6"
PISTON_OBSERVATION_SIZE = 9
PISTONBALL_CONFIG_KEYS = ("n_pistons", "time_penalty", "random_drop", "random_rotate", "ball_mass", "ball_friction", "ball_elasticity", "max_cycles")


class PistonballVectorEnv(ParallelEnv):
    """Pistonball (``pistonball_v6``, discrete actions) with a vector observation per piston.

    Observation space:
        ``Box(-inf, inf, (9,), float32)`` per piston. The entries are: own height, left and right
        neighbour heights (heights in [0, 1], 0 for a missing neighbour), whether a left and a
        right neighbour exist, the ball's horizontal offset from the piston's centre in piston
        widths, the ball's height above the floor in piston widths, and the ball's velocity in
        piston widths per second divided by 10.
    Action space:
        ``Discrete(3)``: 0 moves the piston down, 1 keeps it, 2 moves it up (pistonball's own
        discrete actions).
    Rewards:
        Pistonball's shared team reward: 100 times the fraction of the start distance the ball
        moved left in the step, plus ``time_penalty`` while the ball has not arrived.
    Episode end:
        Terminated when the ball reaches the left wall, truncated after ``max_cycles`` steps; all
        pistons end together.
    """

    metadata = {"name": "pistonball_vector_v0", "render_modes": [], "is_parallelizable": True}

    def __init__(self, **config: Any):
        from pettingzoo.butterfly.pistonball.pistonball import raw_env

        self._raw = raw_env(continuous=False, render_mode=None, **config)
        self.possible_agents = list(self._raw.possible_agents)
        self.agents: list[str] = []
        box = gymnasium.spaces.Box(-np.inf, np.inf, (PISTON_OBSERVATION_SIZE,), np.float32)
        self.observation_spaces = {agent: box for agent in self.possible_agents}
        self.action_spaces = {agent: gymnasium.spaces.Discrete(3) for agent in self.possible_agents}

    @functools.lru_cache(maxsize=None)
    def observation_space(self, agent: str) -> gymnasium.spaces.Space:
        return self.observation_spaces[agent]

    @functools.lru_cache(maxsize=None)
    def action_space(self, agent: str) -> gymnasium.spaces.Space:
        return self.action_spaces[agent]

    def _observations(self) -> dict[str, np.ndarray]:
        raw = self._raw
        floor_y = raw.screen_height - raw.wall_width - (raw.piston_height - raw.piston_head_height)
        travel = raw.n_piston_positions * raw.pixels_per_position
        heights = np.array([(floor_y - piston.position[1]) / travel for piston in raw.pistonList], dtype=np.float32)
        width = float(raw.piston_width)
        ball_x, ball_y = raw.ball.position
        velocity_x, velocity_y = raw.ball.velocity
        count = len(heights)
        observations = {}
        for index, agent in enumerate(self.agents):
            centre = raw.pistonList[index].position[0] + width / 2
            observations[agent] = np.array(
                [
                    heights[index],
                    heights[index - 1] if index > 0 else 0.0,
                    heights[index + 1] if index < count - 1 else 0.0,
                    float(index > 0),
                    float(index < count - 1),
                    (ball_x - centre) / width,
                    (floor_y - ball_y) / width,
                    velocity_x / width / 10.0,
                    velocity_y / width / 10.0,
                ],
                dtype=np.float32,
            )
        return observations

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
        self._raw.reset(seed=seed, options=options)
        self.agents = list(self.possible_agents)
        return self._observations(), {agent: {} for agent in self.agents}

    def step(self, actions: dict[str, int]) -> tuple[dict, dict, dict, dict, dict]:
        raw = self._raw
        acting = list(self.agents)
        # The wrapped AEC env moves pistons one at a time in agent order; the reward of the cycle is set on the last one.
        for _ in acting:
            agent = raw.agent_selection
            raw.step(int(actions[agent]))
        observations = self._observations()
        rewards = {agent: float(raw.rewards[agent]) for agent in acting}
        terminations = {agent: bool(raw.terminations[agent]) for agent in acting}
        truncations = {agent: bool(raw.truncations[agent]) for agent in acting}
        infos: dict[str, dict] = {agent: {} for agent in acting}
        if any(terminations.values()) or any(truncations.values()):
            self.agents = []
        return observations, rewards, terminations, truncations, infos

    def render(self) -> None:
        return None

    def close(self) -> None:
        self._raw.close()


# ---------------------------------------------------------------------------------------------
# Parameter-shared actor-critic over fixed agent slots


class SharedActorCritic(nn.Module):
    """One actor and one critic MLP used by every agent; with ``agent_id_input`` a one-hot slot id is appended."""

    def __init__(self, observation_size: int, num_actions: int, num_slots: int, hidden_sizes: tuple[int, ...], agent_id_input: bool):
        super().__init__()
        self.observation_size = observation_size
        self.num_actions = num_actions
        self.num_slots = num_slots
        self.hidden_sizes = tuple(int(size) for size in hidden_sizes)
        self.agent_id_input = agent_id_input
        in_dim = observation_size + (num_slots if agent_id_input else 0)
        self.actor = MLP(in_dim, num_actions, self.hidden_sizes, activation="tanh", output_std=0.01)
        self.critic = MLP(in_dim, 1, self.hidden_sizes, activation="tanh", output_std=1.0)

    def describe(self) -> dict[str, Any]:
        return {
            "observation_size": self.observation_size,
            "num_actions": self.num_actions,
            "num_slots": self.num_slots,
            "hidden_sizes": list(self.hidden_sizes),
            "agent_id_input": self.agent_id_input,
        }

    def inputs(self, observations: torch.Tensor) -> torch.Tensor:
        """Turn ``(..., num_slots, obs)`` observations into network inputs, appending slot ids if enabled."""
        if not self.agent_id_input:
            return observations
        ids = torch.eye(self.num_slots).expand(*observations.shape[:-2], self.num_slots, self.num_slots)
        return torch.cat([observations, ids], dim=-1)

    def forward(self, observations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.inputs(observations)
        return self.actor(x), self.critic(x).squeeze(-1)


class SlotCollector:
    """Steps ``num_envs`` parallel envs with a fixed slot per possible agent; absent agents are padded and masked.

    Slot ``s`` of every env always belongs to ``possible_agents[s]``. ``valid[e, s]`` is True when
    that agent was present at the start of the step, so only its transitions enter GAE and the loss.
    A truncated agent's final value is folded into its reward so the rollout can treat it as ended.
    """

    def __init__(self, make_env: Callable[[], ParallelEnv], num_envs: int, seed: int):
        self.envs = [make_env() for _ in range(num_envs)]
        self.agents = list(self.envs[0].possible_agents)
        self.num_slots = len(self.agents)
        first_space = self.envs[0].observation_space(self.agents[0])
        self.observation_size = int(np.prod(first_space.shape))
        self.num_actions = int(self.envs[0].action_space(self.agents[0]).n)
        self.seed = seed
        self.episodes_started = 0
        self.obs = np.zeros((num_envs, self.num_slots, self.observation_size), dtype=np.float32)
        self.present = np.zeros((num_envs, self.num_slots), dtype=bool)
        self.episode_return = np.zeros(num_envs, dtype=np.float64)
        self.episode_length = np.zeros(num_envs, dtype=np.int64)
        self.finished: list[tuple[float, int]] = []
        for index in range(num_envs):
            self._reset(index)

    def _reset(self, index: int) -> None:
        observations, _ = self.envs[index].reset(seed=self.seed + self.episodes_started)
        self.episodes_started += 1
        self.obs[index] = 0.0
        self.present[index] = False
        self._write(index, observations)
        self.episode_return[index] = 0.0
        self.episode_length[index] = 0

    def _write(self, index: int, observations: dict[str, np.ndarray]) -> None:
        for slot, agent in enumerate(self.agents):
            if agent in observations and agent in self.envs[index].agents:
                self.obs[index, slot] = np.asarray(observations[agent], dtype=np.float32).reshape(-1)
                self.present[index, slot] = True
            else:
                self.obs[index, slot] = 0.0
                self.present[index, slot] = False

    def step(self, actions: np.ndarray, final_values: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> dict[str, np.ndarray]:
        """Apply ``actions[e, s]`` for present agents; return rewards, ends and validity per slot.

        ``final_values(obs, slots)`` maps the ``(k, obs)`` final observations of truncated agents and
        their slot indices to discounted values ``gamma * V(obs)``, which are added to their rewards.
        """
        num_envs = len(self.envs)
        valid = self.present.copy()
        rewards = np.zeros((num_envs, self.num_slots), dtype=np.float32)
        ended = np.zeros((num_envs, self.num_slots), dtype=bool)
        truncated_obs: list[np.ndarray] = []
        truncated_at: list[tuple[int, int]] = []
        for index, env in enumerate(self.envs):
            joint = {agent: int(actions[index, slot]) for slot, agent in enumerate(self.agents) if valid[index, slot]}
            observations, step_rewards, terminations, truncations, _ = env.step(joint)
            for slot, agent in enumerate(self.agents):
                if not valid[index, slot]:
                    continue
                rewards[index, slot] = float(step_rewards.get(agent, 0.0))
                if terminations.get(agent, False) or truncations.get(agent, False):
                    ended[index, slot] = True
                    if truncations.get(agent, False) and not terminations.get(agent, False) and agent in observations:
                        truncated_obs.append(np.asarray(observations[agent], dtype=np.float32).reshape(-1))
                        truncated_at.append((index, slot))
            present_rewards = [rewards[index, slot] for slot in range(self.num_slots) if valid[index, slot]]
            self.episode_return[index] += float(np.mean(present_rewards)) if present_rewards else 0.0
            self.episode_length[index] += 1
            self._write(index, observations)
        if truncated_obs:
            bootstrap = final_values(np.stack(truncated_obs), np.array([slot for _, slot in truncated_at]))
            for (index, slot), value in zip(truncated_at, bootstrap):
                rewards[index, slot] += float(value)
        for index, env in enumerate(self.envs):
            if not env.agents:
                self.finished.append((float(self.episode_return[index]), int(self.episode_length[index])))
                self._reset(index)
        return {"rewards": rewards, "ended": ended, "valid": valid}

    def restart(self, episodes_started: int) -> None:
        """Reset every env with the seeds that follow ``episodes_started`` episodes, dropping the episodes in progress."""
        self.episodes_started = int(episodes_started)
        self.finished.clear()
        for index in range(len(self.envs)):
            self._reset(index)

    def close(self) -> None:
        for env in self.envs:
            env.close()


class CooperativeSettings(BaseModel):
    """The ``settings:`` of a ``cooperative_ppo`` scenario: parameter-shared PPO parameters."""

    model_config = ConfigDict(extra="forbid")

    rollout_steps: int = Field(64, ge=1, description="Env steps per env per update.")
    learning_rate: float = Field(3e-4, gt=0)
    anneal_lr: bool = True
    gamma: float = Field(0.99, gt=0, le=1)
    gae_lambda: float = Field(0.95, ge=0, le=1)
    clip_coef: float = Field(0.2, gt=0)
    clip_vloss: bool = True
    ent_coef: float = Field(0.01, ge=0)
    vf_coef: float = Field(0.5, ge=0)
    update_epochs: int = Field(4, ge=1)
    num_minibatches: int = Field(4, ge=1)
    max_grad_norm: float = Field(0.5, gt=0)
    hidden_sizes: list[int] = Field(default_factory=lambda: [64, 64], min_length=1)
    agent_id_input: bool = Field(False, description="Append a one-hot slot id to each agent's observation.")


def make_parallel_env(env_id: str, config: dict[str, Any]) -> ParallelEnv:
    """Build the parallel env of a ``cooperative_ppo`` scenario."""
    if env_id == PISTONBALL_ID:
        return PistonballVectorEnv(**config)
    raise ValueError(f"unknown cooperative env {env_id!r}")


class SharedPPOTrainer:
    """Parameter-shared PPO: every present agent's transition trains the same actor and critic."""

    def __init__(self, collector: SlotCollector, settings: CooperativeSettings, total_steps: int, seed: int):
        self.collector = collector
        self.settings = settings
        self.total_steps = max(int(total_steps), 1)
        self.generator = torch.Generator().manual_seed(seed)
        self.net = SharedActorCritic(collector.observation_size, collector.num_actions, collector.num_slots, tuple(settings.hidden_sizes), settings.agent_id_input)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=settings.learning_rate, eps=1e-5)
        self.global_step = 0
        self.updates = 0

    def _final_values(self, observations: np.ndarray, slots: np.ndarray) -> np.ndarray:
        padded = np.zeros((observations.shape[0], self.collector.num_slots, observations.shape[1]), dtype=np.float32)
        padded[np.arange(observations.shape[0]), slots] = observations
        with torch.no_grad():
            _, values = self.net(torch.as_tensor(padded))
        return self.settings.gamma * values[np.arange(observations.shape[0]), slots].numpy()

    def collect(self) -> dict[str, np.ndarray]:
        """Step every env ``rollout_steps`` times; return flattened valid transitions with advantages."""
        s = self.settings
        c = self.collector
        steps, envs, slots = s.rollout_steps, len(c.envs), c.num_slots
        obs = np.zeros((steps, envs, slots, c.observation_size), dtype=np.float32)
        actions = np.zeros((steps, envs, slots), dtype=np.int64)
        log_probs = np.zeros((steps, envs, slots), dtype=np.float32)
        values = np.zeros((steps, envs, slots), dtype=np.float32)
        rewards = np.zeros((steps, envs, slots), dtype=np.float32)
        ended = np.zeros((steps, envs, slots), dtype=np.float32)
        valid = np.zeros((steps, envs, slots), dtype=bool)
        for t in range(steps):
            obs[t] = c.obs
            with torch.no_grad():
                logits, value = self.net(torch.as_tensor(c.obs))
                distribution = torch.distributions.Categorical(logits=logits.reshape(-1, c.num_actions))
                chosen = distribution.sample()
                log_probs[t] = distribution.log_prob(chosen).reshape(envs, slots).numpy()
            actions[t] = chosen.reshape(envs, slots).numpy()
            values[t] = value.numpy()

            result = c.step(actions[t], self._final_values)
            rewards[t], ended[t], valid[t] = result["rewards"], result["ended"], result["valid"]
            self.global_step += envs

        with torch.no_grad():
            _, last_value = self.net(torch.as_tensor(c.obs))
        # Every end is treated as terminal here because truncated agents already carry their bootstrap in the reward.
        flat = (steps, envs * slots)
        advantages, returns = compute_gae(
            rewards.reshape(flat), values.reshape(flat), ended.reshape(flat), ended.reshape(flat), valid.reshape(flat),
            last_value.numpy().reshape(-1), s.gamma, s.gae_lambda,
        )

        keep = valid.reshape(-1)
        slot_ids = np.broadcast_to(np.arange(slots), (steps, envs, slots)).reshape(-1)
        return {
            "obs": obs.reshape(-1, c.observation_size)[keep],
            "slots": slot_ids[keep],
            "actions": actions.reshape(-1)[keep],
            "log_probs": log_probs.reshape(-1)[keep],
            "values": values.reshape(-1)[keep],
            "advantages": advantages.reshape(-1)[keep],
            "returns": returns.reshape(-1)[keep],
        }

    def _forward_rows(self, obs: torch.Tensor, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the network on single-agent rows, giving each its slot id when the network uses one."""
        if self.net.agent_id_input:
            x = torch.cat([obs, torch.nn.functional.one_hot(slots, self.net.num_slots).float()], dim=-1)
        else:
            x = obs
        return self.net.actor(x), self.net.critic(x).squeeze(-1)

    def update(self, batch: dict[str, np.ndarray]) -> dict[str, float]:
        """Run PPO epochs over the valid transitions with the shared :func:`ppo_loss`; return the loss tags."""
        s = self.settings
        if s.anneal_lr:
            self.optimizer.param_groups[0]["lr"] = max(1.0 - self.global_step / self.total_steps, 0.0) * s.learning_rate
        tensors = {key: torch.as_tensor(np.ascontiguousarray(value)) for key, value in batch.items()}
        size = int(tensors["actions"].shape[0])
        stats: dict[str, list[float]] = {"policy_loss": [], "value_loss": [], "entropy": [], "approx_kl": [], "clipfrac": []}
        minibatch = max(size // s.num_minibatches, 1)
        for _ in range(s.update_epochs if size else 0):
            order = torch.randperm(size, generator=self.generator)
            for start in range(0, size, minibatch):
                index = order[start : start + minibatch]
                logits, value = self._forward_rows(tensors["obs"][index], tensors["slots"][index])
                distribution = torch.distributions.Categorical(logits=logits)
                advantages = tensors["advantages"][index]
                if advantages.numel() > 1:
                    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
                loss, parts = ppo_loss(
                    distribution.log_prob(tensors["actions"][index]), tensors["log_probs"][index], advantages,
                    value, tensors["values"][index], tensors["returns"][index], distribution.entropy(),
                    clip_coef=s.clip_coef, clip_vloss=s.clip_vloss, ent_coef=s.ent_coef, vf_coef=s.vf_coef,
                )
                self.optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.net.parameters(), s.max_grad_norm)
                self.optimizer.step()
                for key, part in parts.items():
                    stats[key].append(float(part))
        self.updates += 1
        tags = {f"losses/{key}": float(np.mean(values)) for key, values in stats.items() if values}
        tags["charts/learning_rate"] = float(self.optimizer.param_groups[0]["lr"])
        return tags

    def run_state(self) -> dict[str, Any]:
        """Return what ``--resume`` needs beyond the weights: optimiser, counters, episode seeds and RNG states."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "counters": {"global_step": self.global_step, "updates": self.updates, "episodes_started": self.collector.episodes_started},
            "rng": {"generator": self.generator.get_state(), "global": rng_state()},
        }

    def load_run_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`run_state` and restart the envs with the episode seeds that come next.

        Limitation: pistonball's physics state is not captured, so the episodes in progress at the
        checkpoint restart from a reset and a resumed run is not bit-identical to an uninterrupted one.
        """
        self.optimizer.load_state_dict(state["optimizer"])
        counters = state["counters"]
        self.global_step = int(counters["global_step"])
        self.updates = int(counters["updates"])
        self.generator.set_state(state["rng"]["generator"])
        set_rng_state(state["rng"]["global"])
        self.collector.restart(int(counters["episodes_started"]))

    def drain_episode_stats(self) -> dict[str, float]:
        finished = self.collector.finished
        if not finished:
            return {}
        tags = {"charts/episodic_return": float(np.mean([f[0] for f in finished])), "charts/episodic_length": float(np.mean([f[1] for f in finished]))}
        finished.clear()
        return tags


def run_episodes(make_env: Callable[[], ParallelEnv], act: Callable[[np.ndarray, np.ndarray], np.ndarray], episodes: int, seeds: list[int]) -> list[dict[str, float]]:
    """Play ``episodes`` per seed; ``act(obs (slots, d), present (slots,))`` returns one action per slot.

    Each result contains ``return_mean`` (the per-step mean reward over present agents, summed over
    the episode) and ``episode_length_mean``, so :func:`shared.stats.aggregate` applies directly.
    """
    env = make_env()
    agents = list(env.possible_agents)
    size = int(np.prod(env.observation_space(agents[0]).shape))
    results = []
    try:
        for seed in seeds:
            for episode in range(episodes):
                observations, _ = env.reset(seed=seed * 1000 + episode)
                total, length = 0.0, 0
                while env.agents:
                    obs = np.zeros((len(agents), size), dtype=np.float32)
                    present = np.zeros(len(agents), dtype=bool)
                    for slot, agent in enumerate(agents):
                        if agent in env.agents:
                            obs[slot] = np.asarray(observations[agent], dtype=np.float32).reshape(-1)
                            present[slot] = True
                    chosen = act(obs, present)
                    joint = {agent: int(chosen[slot]) for slot, agent in enumerate(agents) if present[slot]}
                    observations, rewards, _, _, _ = env.step(joint)
                    total += float(np.mean([rewards[agent] for agent in joint])) if joint else 0.0
                    length += 1
                results.append({"return_mean": total, "episode_length_mean": float(length)})
    finally:
        env.close()
    return results


CHECKPOINT_KIND = "cooperative_ppo"
# Tensors of a resumable checkpoint's run state (optimiser, RNGs) are stored under this prefix.
RUN_STATE_PREFIX = "run"


def save_shared_policy(stem: Any, net: SharedActorCritic, env_id: str, metadata: dict[str, Any], run_state: dict[str, Any] | None = None) -> Any:
    """Save the shared actor-critic with the architecture fields that :func:`load_shared_policy` checks.

    With ``run_state`` the file also contains what ``--resume`` needs, its tensors under the ``run/`` prefix.
    """
    tensors = {key: value.detach().clone() for key, value in net.state_dict().items()}
    document = {"kind": CHECKPOINT_KIND, "env_id": env_id, **net.describe(), **metadata, "resumable": run_state is not None}
    if run_state is not None:
        document["state"] = flatten_state(run_state, RUN_STATE_PREFIX, tensors)
    return save_checkpoint(stem, tensors, document)


def load_shared_policy(stem: Any, env_id: str, expected: dict[str, Any]) -> SharedActorCritic:
    """Load a shared policy; raise CheckpointError when it is for another kind, env or architecture."""
    tensors, metadata = load_checkpoint(stem)
    if metadata.get("kind") != CHECKPOINT_KIND or metadata.get("env_id") != env_id:
        raise CheckpointError(f"{stem}: kind: checkpoint is for {metadata.get('kind')!r} on {metadata.get('env_id')!r}, expected {CHECKPOINT_KIND!r} on {env_id!r}")
    for key, value in expected.items():
        if metadata.get(key) != value:
            raise CheckpointError(f"{stem}: {key}: the checkpoint has {metadata.get(key)!r}, the scenario needs {value!r}")
    net = SharedActorCritic(int(metadata["observation_size"]), int(metadata["num_actions"]), int(metadata["num_slots"]), tuple(metadata["hidden_sizes"]), bool(metadata["agent_id_input"]))
    try:
        net.load_state_dict({key: value for key, value in tensors.items() if not key.startswith(RUN_STATE_PREFIX + "/")})
    except RuntimeError as error:
        raise CheckpointError(f"{stem}: state: weights do not fit the network ({str(error).splitlines()[0]})") from None
    return net.eval()


class CooperativePPOKind(ScenarioKind):
    """Parameter-shared PPO on a cooperative PettingZoo env (Pistonball with vector observations)."""

    name = "cooperative_ppo"
    domain = "game_ai"
    description = "Parameter-shared PPO on PettingZoo pistonball_v6 with a vector observation per piston."
    needs_agent = False
    settings_model = CooperativeSettings
    perturbations: dict[str, Perturbation] = {}

    def validate(self, loaded: "LoadedScenario") -> None:
        scenario = loaded.scenario
        source = str(loaded.source)
        if scenario.env is None:
            raise ScenarioError(located(source, "env", f"required: env: {{id: {PISTONBALL_ID}}}"))
        if scenario.env.id != PISTONBALL_ID:
            raise ScenarioError(unknown_choice(source, "env.id", scenario.env.id, [PISTONBALL_ID]))
        for key in scenario.env.config:
            if key not in PISTONBALL_CONFIG_KEYS:
                raise ScenarioError(unknown_choice(source, f"env.config.{key}", key, list(PISTONBALL_CONFIG_KEYS)))
        n_pistons = scenario.env.config.get("n_pistons", 20)
        if not isinstance(n_pistons, int) or n_pistons < 2:
            raise ScenarioError(located(source, "env.config.n_pistons", f"must be an integer of at least 2, got {n_pistons!r}"))
        extra = sorted(set(scenario.agent) - {"name"})
        if extra:
            raise ScenarioError(located(source, f"agent.{extra[0]}", "this kind reads its PPO parameters from settings; allowed under agent: name"))
        if scenario.agent.get("name", "ppo") != "ppo":
            raise ScenarioError(unknown_choice(source, "agent.name", scenario.agent.get("name"), ["ppo"]))
        self.validate_perturb(scenario.perturb, source)

    def _env_maker(self, loaded: "LoadedScenario") -> Callable[[], ParallelEnv]:
        spec = loaded.scenario.env
        assert spec is not None
        config = dict(spec.config)
        if spec.max_episode_steps is not None:
            config["max_cycles"] = spec.max_episode_steps
        return lambda: make_parallel_env(spec.id, config)

    def run(self, loaded: "LoadedScenario", run_dir: "RunDir", options: RunOptions) -> dict[str, Any]:
        scenario = loaded.scenario
        settings: CooperativeSettings = loaded.settings
        seed = options.seed if options.seed is not None else scenario.seed
        seed_everything(seed)
        torch.set_num_threads(1)  # small MLPs: one thread avoids synchronisation costs
        total_steps = scenario.steps_for(options.budget) if scenario.train else 0
        if options.resume and total_steps == 0:
            raise ScenarioError(located(str(loaded.source), "--resume", "the scenario trains nothing (train: false or a zero budget); resume needs a budget"))
        if not options.resume:
            run_dir.write_scenario(loaded)
        started = time.perf_counter()

        make_env = self._env_maker(loaded)
        assert scenario.env is not None
        collector = SlotCollector(make_env, scenario.env.num_envs, seed)
        trainer = SharedPPOTrainer(collector, settings, total_steps, seed)
        interrupted = False
        try:
            if total_steps == 0:
                if not scenario.checkpoint_path:
                    raise ScenarioError(located(str(loaded.source), "checkpoint_path", "the scenario trains nothing (train: false or a zero budget), so it needs a checkpoint to evaluate"))
                trainer.net = load_shared_policy(loaded.resolve_path(scenario.checkpoint_path), scenario.env.id, trainer.net.describe())
            else:
                resume_step = None
                if options.resume:
                    seed = self._resume(trainer, run_dir.checkpoints / "latest", loaded)
                    resume_step = trainer.global_step
                interrupted = self._train(trainer, loaded, run_dir, options, seed, resume_step)
        finally:
            collector.close()

        latest = self._save_latest(trainer, run_dir, loaded, seed) if total_steps > 0 else save_shared_policy(
            run_dir.checkpoints / "latest", trainer.net, scenario.env.id, {"scenario": scenario.name, "seed": seed, "global_step": trainer.global_step}
        )
        if interrupted:
            return {"interrupted": True, "global_step": trainer.global_step, "checkpoint": str(latest)}
        extra = {"budget": options.budget, "train_steps": trainer.global_step, "train_seconds": round(time.perf_counter() - started, 2), "checkpoint": str(latest)}
        return self._evaluate_and_write(loaded, run_dir, trainer.net, seed, extra)

    def evaluate(self, loaded: "LoadedScenario", run_dir: "RunDir", options: EvalOptions) -> dict[str, Any]:
        scenario = loaded.scenario
        source = str(loaded.source)
        checkpoint = options.checkpoint or (loaded.resolve_path(scenario.checkpoint_path) if scenario.checkpoint_path else None)
        if checkpoint is None:
            raise ScenarioError(located(source, "--checkpoint", "required: the scenario ships no checkpoint_path"))
        self.validate_perturb(options.perturb, source, "--perturb")
        assert scenario.env is not None
        probe = self._env_maker(loaded)()
        slots = len(probe.possible_agents)
        probe.close()
        settings: CooperativeSettings = loaded.settings
        expected = {"num_slots": slots, "hidden_sizes": list(settings.hidden_sizes), "agent_id_input": settings.agent_id_input}
        net = load_shared_policy(checkpoint, scenario.env.id, expected)
        seed_everything(scenario.seed)
        run_dir.write_scenario(loaded)
        return self._evaluate_and_write(loaded, run_dir, net, scenario.seed, {"checkpoint": str(checkpoint)}, options.episodes, options.seeds, options.random_baseline)

    @staticmethod
    def _save_latest(trainer: SharedPPOTrainer, run_dir: "RunDir", loaded: "LoadedScenario", seed: int) -> Any:
        """Write ``checkpoints/latest``: the shared policy plus the run state that ``--resume`` restores."""
        scenario = loaded.scenario
        env_id = scenario.env.id if scenario.env else ""
        metadata = {"scenario": scenario.name, "seed": seed, "global_step": trainer.global_step, "updates": trainer.updates}
        return save_shared_policy(run_dir.checkpoints / "latest", trainer.net, env_id, metadata, run_state=trainer.run_state())

    @staticmethod
    def _resume(trainer: SharedPPOTrainer, stem: Path, loaded: "LoadedScenario") -> int:
        """Load a resumable ``latest`` checkpoint into ``trainer``; return the run's seed."""
        where = f"{stem}.json"
        state, metadata = load_run_checkpoint(stem, loaded.scenario.name)
        assert loaded.scenario.env is not None
        net = load_shared_policy(stem, loaded.scenario.env.id, trainer.net.describe())
        try:
            trainer.net.load_state_dict(net.state_dict())
            trainer.load_run_state(state)
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise CheckpointError(f"{where}: state: the run state does not fit this scenario ({str(error).splitlines()[0]})") from None
        logger.info("resumed from %s at global_step %d (episodes in progress restart)", stem, trainer.global_step)
        return int(metadata.get("seed", loaded.scenario.seed))

    def _train(self, trainer: SharedPPOTrainer, loaded: "LoadedScenario", run_dir: "RunDir", options: RunOptions, seed: int, resume_step: int | None = None) -> bool:
        """Train with logging, checkpoints, a progress bar and Ctrl-C handling; return True if interrupted."""
        from shared.training import InterruptFlag, progress_bar

        scenario = loaded.scenario
        metric_logger = MetricLogger(run_dir.path, scenario.logging.tensorboard, resume_step=resume_step)
        bar = progress_bar(trainer.total_steps, trainer.global_step, enabled=options.progress, desc="pistonball")
        interval = scenario.checkpoint.interval
        next_checkpoint = (trainer.global_step // interval + 1) * interval if interval else None
        started = time.perf_counter()
        start_step = trainer.global_step
        try:
            with InterruptFlag() as interrupt:
                while trainer.global_step < trainer.total_steps and not interrupt.requested:
                    before = trainer.global_step
                    tags = trainer.update(trainer.collect())
                    tags.update(trainer.drain_episode_stats())
                    tags["charts/SPS"] = (trainer.global_step - start_step) / max(time.perf_counter() - started, 1e-9)
                    if trainer.updates % scenario.logging.interval == 0:
                        metric_logger.log(trainer.global_step, tags)
                    if next_checkpoint is not None and trainer.global_step >= next_checkpoint:
                        self._save_latest(trainer, run_dir, loaded, seed)
                        next_checkpoint = (trainer.global_step // interval + 1) * interval
                    if bar is not None:
                        bar.update(trainer.global_step - before)
                        if "charts/episodic_return" in tags:
                            bar.set_postfix({"return": f"{tags['charts/episodic_return']:.1f}"})
        finally:
            metric_logger.close()
            if bar is not None:
                bar.close()
        return interrupt.requested

    def _evaluate_and_write(
        self,
        loaded: "LoadedScenario",
        run_dir: "RunDir",
        net: SharedActorCritic,
        seed: int,
        extra: dict[str, Any],
        episodes: int | None = None,
        seeds: list[int] | None = None,
        random_baseline: bool = True,
    ) -> dict[str, Any]:
        """Evaluate the greedy shared policy (and the uniform random policy) and write metrics.json and report.md."""
        scenario = loaded.scenario
        evaluation = scenario.evaluation
        episodes = episodes or evaluation.episodes
        seeds = seeds or evaluation.seeds
        make_env = self._env_maker(loaded)

        def greedy(obs: np.ndarray, present: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                logits, _ = net(torch.as_tensor(obs[None]))
            return logits[0].argmax(dim=-1).numpy()

        results = run_episodes(make_env, greedy, episodes, seeds)
        metrics, ci95 = aggregate(results, evaluation.bootstrap_samples, seed)
        baselines: dict[str, dict[str, Any]] = {}
        if random_baseline and evaluation.random_baseline:
            rng = np.random.default_rng(seed)
            random_results = run_episodes(make_env, lambda obs, present: rng.integers(0, net.num_actions, size=obs.shape[0]), episodes, seeds)
            base_metrics, base_ci = aggregate(random_results, evaluation.bootstrap_samples, seed)
            baselines["random"] = {"metrics": base_metrics, "ci95": base_ci}
        summary = metrics_summary(loaded, "ppo", seed, len(results), metrics, ci95, baselines, extra=extra)
        run_dir.write_metrics(summary)
        note = (
            "## Setup\n\nOne actor-critic shared by all pistons (parameter sharing), vector observations read from the "
            f"simulator state ({PISTON_OBSERVATION_SIZE} numbers per piston) instead of the RGB crops. "
            "Returns are the per-step team reward summed over the episode; the random baseline samples each piston's action uniformly."
        )
        write_report(run_dir.path, [note])
        return summary


def register() -> None:
    """Register the ``cooperative_ppo`` kind."""
    register_kind(CooperativePPOKind())
