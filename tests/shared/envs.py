"""Tiny deterministic envs for unit tests of rollouts and buffers."""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class CountingEnv(gym.Env):
    """Observation is the step index within the episode; reward 1 per step.

    Spaces: observation Box(1,) float32 holding the step index; action Discrete(2), ignored.
    Episode end: after ``length`` steps, terminated when ``terminate`` else truncated.
    """

    metadata = {"render_modes": []}

    def __init__(self, length: int = 3, terminate: bool = True):
        self.length = length
        self.terminate = terminate
        self.observation_space = gym.spaces.Box(0, 1000, shape=(1,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], dtype=np.float32), {}

    def step(self, action):
        self.t += 1
        done = self.t >= self.length
        return np.array([float(self.t)], dtype=np.float32), 1.0, done and self.terminate, done and not self.terminate, {}


def counting_vector_env(num_envs: int, lengths: list[int] | None = None, terminate: bool = True) -> gym.vector.SyncVectorEnv:
    lengths = lengths or [3] * num_envs
    return gym.vector.SyncVectorEnv(
        [lambda length=length: CountingEnv(length, terminate) for length in lengths],
        autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP,
    )
