"""Experience storage: GAE for on-policy rollouts and a replay buffer with n-step returns for DQN.

Both respect the autoreset mask of :mod:`shared.rollout`: a step whose ``valid`` flag is False is
the dummy step Gymnasium 1.x vector envs take after an episode ends, and it never reaches a loss.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np


def compute_gae(
    rewards: np.ndarray,
    values: np.ndarray,
    terminations: np.ndarray,
    dones: np.ndarray,
    valid: np.ndarray,
    last_value: np.ndarray,
    gamma: float,
    gae_lambda: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Generalised advantage estimation (Schulman et al. 2016) over a ``(T, N)`` rollout.

    ``values[t]`` is V(obs_t) and the observation after step ``t`` is ``obs_{t+1}`` (``last_value``
    after the final step). On the step that ends an episode that observation is the final one, so
    a truncated step bootstraps from V(final obs) while a terminated step (``terminations``) does
    not; ``dones`` (terminated or truncated) stops the advantage flowing back across the boundary.
    Invalid steps (the autoreset dummies) get advantage and return 0 and must be masked by callers.
    """
    steps = rewards.shape[0]
    advantages = np.zeros_like(rewards, dtype=np.float32)
    next_advantage = np.zeros(rewards.shape[1:], dtype=np.float32)
    for t in reversed(range(steps)):
        next_value = last_value if t == steps - 1 else values[t + 1]
        delta = rewards[t] + gamma * (1.0 - terminations[t]) * next_value - values[t]
        advantage = delta + gamma * gae_lambda * (1.0 - dones[t]) * next_advantage
        advantage = np.where(valid[t], advantage, 0.0)
        advantages[t] = advantage
        next_advantage = advantage
    returns = np.where(valid, advantages + values, 0.0).astype(np.float32)
    return advantages, returns


def returns_to_go(rewards: np.ndarray, gamma: float, bootstrap: float = 0.0) -> np.ndarray:
    """Discounted return from each step of one episode to its end.

    ``bootstrap`` is the value after the last step: 0 when the episode terminated, and the value of
    the final observation when a time limit truncated it.
    """
    returns = np.zeros(len(rewards), dtype=np.float32)
    running = float(bootstrap)
    for t in reversed(range(len(rewards))):
        running = float(rewards[t]) + gamma * running
        returns[t] = running
    return returns


class ReplayBuffer:
    """A uniform replay buffer with optional n-step returns over a vector env.

    Each stored transition is ``(obs, action, return, next_obs, discount)`` where ``return`` is the
    discounted sum of up to ``n_step`` rewards and ``discount`` is gamma^k for the bootstrap from
    ``next_obs``, or 0 when the episode terminated inside the window. Truncation keeps the
    bootstrap, so a time limit is not mistaken for the end of the task.
    """

    def __init__(
        self,
        capacity: int,
        observation_shape: tuple[int, ...],
        observation_dtype: np.dtype,
        action_shape: tuple[int, ...],
        action_dtype: np.dtype,
        num_envs: int,
        gamma: float,
        n_step: int = 1,
        seed: int = 0,
    ):
        self.capacity = int(capacity)
        self.gamma = gamma
        self.n_step = n_step
        self.num_envs = num_envs
        self.obs = np.zeros((self.capacity, *observation_shape), dtype=observation_dtype)
        self.next_obs = np.zeros((self.capacity, *observation_shape), dtype=observation_dtype)
        self.actions = np.zeros((self.capacity, *action_shape), dtype=action_dtype)
        self.returns = np.zeros(self.capacity, dtype=np.float32)
        self.discounts = np.zeros(self.capacity, dtype=np.float32)
        self.position = 0
        self.size = 0
        self.rng = np.random.default_rng(seed)
        self._pending: list[deque[tuple[np.ndarray, Any, float]]] = [deque() for _ in range(num_envs)]

    def __len__(self) -> int:
        return self.size

    def _store(self, obs: np.ndarray, action: Any, ret: float, next_obs: np.ndarray, discount: float) -> None:
        self.obs[self.position] = obs
        self.actions[self.position] = action
        self.returns[self.position] = ret
        self.next_obs[self.position] = next_obs
        self.discounts[self.position] = discount
        self.position = (self.position + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def _emit_oldest(self, env: int, next_obs: np.ndarray, terminated: bool) -> None:
        """Store the oldest pending transition of ``env`` with the rewards that follow it in the window."""
        window = self._pending[env]
        ret = 0.0
        for k, (_, _, reward) in enumerate(window):
            ret += (self.gamma**k) * reward
        discount = 0.0 if terminated else self.gamma ** len(window)
        obs, action, _ = window.popleft()
        self._store(obs, action, ret, next_obs, discount)

    def add(
        self,
        obs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        next_obs: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        valid: np.ndarray,
    ) -> None:
        """Add one vector step; invalid (autoreset) rows are skipped."""
        for env in range(self.num_envs):
            if not valid[env]:
                continue
            self._pending[env].append((obs[env].copy(), actions[env], float(rewards[env])))
            if terminated[env] or truncated[env]:
                while self._pending[env]:
                    self._emit_oldest(env, next_obs[env], bool(terminated[env]))
            elif len(self._pending[env]) == self.n_step:
                self._emit_oldest(env, next_obs[env], False)

    def sample(self, batch_size: int) -> dict[str, np.ndarray]:
        """Sample a batch uniformly with the buffer's own seeded generator."""
        indices = self.rng.integers(0, self.size, size=batch_size)
        return {
            "obs": self.obs[indices],
            "actions": self.actions[indices],
            "returns": self.returns[indices],
            "next_obs": self.next_obs[indices],
            "discounts": self.discounts[indices],
        }

    # Checkpoint support: arrays go to safetensors, counters and the RNG state to JSON.

    def state_arrays(self) -> dict[str, np.ndarray]:
        arrays = {
            "obs": self.obs[: self.size],
            "next_obs": self.next_obs[: self.size],
            "actions": self.actions[: self.size],
            "returns": self.returns[: self.size],
            "discounts": self.discounts[: self.size],
        }
        for env, window in enumerate(self._pending):
            if window:
                arrays[f"pending_obs_{env}"] = np.stack([w[0] for w in window])
                arrays[f"pending_actions_{env}"] = np.stack([np.asarray(w[1]) for w in window])
                arrays[f"pending_rewards_{env}"] = np.array([w[2] for w in window], dtype=np.float64)
        return arrays

    def state_counters(self) -> dict[str, Any]:
        return {"position": self.position, "size": self.size, "rng": self.rng.bit_generator.state}

    def load_state(self, arrays: dict[str, np.ndarray], counters: dict[str, Any]) -> None:
        size = int(counters["size"])
        self.obs[:size] = arrays["obs"]
        self.next_obs[:size] = arrays["next_obs"]
        self.actions[:size] = arrays["actions"]
        self.returns[:size] = arrays["returns"]
        self.discounts[:size] = arrays["discounts"]
        self.size = size
        self.position = int(counters["position"])
        self.rng.bit_generator.state = counters["rng"]
        for env in range(self.num_envs):
            self._pending[env].clear()
            if f"pending_obs_{env}" in arrays:
                for o, a, r in zip(arrays[f"pending_obs_{env}"], arrays[f"pending_actions_{env}"], arrays[f"pending_rewards_{env}"]):
                    self._pending[env].append((o.copy(), a.item() if a.ndim == 0 else a.copy(), float(r)))
