"""The interface every agent shares: acting, one training iteration, and state for checkpoints."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from shared.networks import RunningMeanStd
    from shared.rollout import VectorCollector


class AgentConfig(BaseModel):
    """Base of every agent's hyperparameter model; unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Capabilities:
    """Support table of an agent: the scenario validator checks the env against it before training."""

    discrete: bool
    continuous: bool
    vector_envs: bool
    cost_signal: bool
    observation: str = "box"  # "box" (flat or image), or "any" for agents that bring their own encoder


class Agent(ABC):
    """An RL agent: ``act`` for evaluation and deployment, ``train_iteration`` for learning.

    The shared training loop (``shared.training.Trainer``) calls :meth:`train_iteration` until the
    step budget is spent. One iteration collects experience through the collector it is given (the
    collector owns the vector env and its autoreset bookkeeping) and then updates the networks.
    """

    name: ClassVar[str]
    Config: ClassVar[type[AgentConfig]]
    capabilities: ClassVar[Capabilities]

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        config: AgentConfig,
        *,
        num_envs: int = 1,
        total_steps: int = 0,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        self.observation_space = observation_space
        self.action_space = action_space
        self.config = config
        self.num_envs = num_envs
        self.total_steps = max(int(total_steps), 1)
        self.seed = seed
        self.device = torch.device(device)

    @abstractmethod
    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """Return one action per row of the batched observation ``obs``."""

    @abstractmethod
    def train_iteration(self, collector: "VectorCollector") -> dict[str, float]:
        """Collect experience with ``collector``, update, and return the losses to log by tag."""

    @abstractmethod
    def modules(self) -> dict[str, torch.nn.Module]:
        """Return the networks by name; their weights are what checkpoints store."""

    def optimizers(self) -> dict[str, Any]:
        """Return the optimisers by name (anything with state_dict/load_state_dict), so a resumed run continues with their moments."""
        return {}

    def extra_state(self) -> dict[str, Any]:
        """Return JSON-serialisable counters (schedule position, epsilon step) for checkpoints."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned."""

    def buffers_state(self) -> dict[str, np.ndarray]:
        """Return arrays to checkpoint for an exact resume, such as a replay buffer; may be empty."""
        return {}

    def load_buffers_state(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`buffers_state` returned."""

    def budget_fraction(self, global_step: int) -> float:
        """Return the fraction of the step budget spent, the same on every rank under torch.distributed.

        Ranks count different numbers of valid steps, because their episodes end at different
        times. Schedules therefore use the mean over ranks, or their learning rates would drift apart.
        """
        (total,) = self.sum_over_ranks([float(global_step)])
        return total / self.world_size() / self.total_steps

    def sum_over_ranks(self, values: Sequence[float] | np.ndarray) -> list[float]:
        """Return ``values`` summed element-wise over ranks under torch.distributed, else unchanged.

        Every decision that sets how many collective calls follow (an early stop on the KL, a
        schedule, a statistic that feeds the loss) goes through here, so that all ranks agree.
        """
        if not self.distributed():
            return [float(value) for value in np.asarray(values, dtype=np.float64)]
        from shared.distributed import all_reduce_sum

        tensor = torch.as_tensor(np.asarray(values, dtype=np.float64)).clone()
        all_reduce_sum(tensor)
        return tensor.tolist()

    def world_size(self) -> int:
        """Return the number of ranks under torch.distributed, else 1."""
        return torch.distributed.get_world_size() if self.distributed() else 1

    @staticmethod
    def distributed() -> bool:
        """Return whether this process is one rank of a torch.distributed run; loops call it once, because the check is slow."""
        return torch.distributed.is_available() and torch.distributed.is_initialized()

    def average_gradients(self) -> None:
        """All-reduce and average gradients across ranks when training under torch.distributed.

        Agents call this between ``backward()`` and the optimiser step; in a single process it
        does nothing.
        """
        if not self.distributed():
            return
        from shared.distributed import all_reduce_sum

        world_size = self.world_size()
        flat_covered: set[int] = set()
        for optimizer in self.optimizers().values():
            flat_grad = getattr(optimizer, "flat_grad", None)
            if flat_grad is not None:  # one all-reduce for every parameter of a FlatAdam
                all_reduce_sum(flat_grad)
                flat_grad.div_(world_size)
                flat_covered.update(id(p) for p in optimizer.parameters)
        for module in self.modules().values():
            for parameter in module.parameters():
                if parameter.grad is not None and id(parameter) not in flat_covered:
                    all_reduce_sum(parameter.grad)
                    parameter.grad.div_(world_size)

    def compile(self) -> None:
        """Wrap the networks' forward passes with ``torch.compile`` (opt-in through ``compile: true``)."""
        for module in self.modules().values():
            module.forward = torch.compile(module.forward)  # type: ignore[method-assign]

    @classmethod
    def check_spaces(cls, observation_space: gym.Space, action_space: gym.Space) -> str | None:
        """Return why this agent cannot use these spaces, or None when it can."""
        caps = cls.capabilities
        if isinstance(action_space, gym.spaces.Discrete) and not caps.discrete:
            return f"{cls.name} does not support discrete actions"
        if isinstance(action_space, gym.spaces.Box) and not caps.continuous:
            return f"{cls.name} needs discrete actions, but the env's action space is continuous ({action_space})"
        if not isinstance(action_space, (gym.spaces.Discrete, gym.spaces.Box)):
            return f"{cls.name} supports Discrete or Box action spaces, not {type(action_space).__name__}"
        if caps.observation == "box" and not isinstance(observation_space, gym.spaces.Box):
            return f"{cls.name} needs a Box observation space, not {type(observation_space).__name__}"
        return None


class PooledRunningStats:
    """Feeds a rollout's samples (observations, returns) into running statistics, pooled over ranks.

    In one process this is ``stats.update`` per step. Under torch.distributed each rank also folds
    in its own samples as it steps, so its rollout acts as one process would. :meth:`finish` then
    gives every rank the statistics of all ranks' samples. The ranks keep equal weights, so they
    must normalise their inputs and rewards equally too.
    """

    def __init__(self, stats: "RunningMeanStd", agent: Agent) -> None:
        self.stats = stats
        self.agent = agent
        self.distributed = agent.distributed()
        self.start = [stats.mean.clone(), stats.var.clone(), stats.count.clone()] if self.distributed else []
        self.count = 0
        self.total = np.zeros(stats.mean.shape, dtype=np.float64)
        self.total_squares = np.zeros(stats.mean.shape, dtype=np.float64)

    def update(self, batch: np.ndarray) -> None:
        """Fold one step's samples (first axis = envs) into the statistics."""
        self.stats.update(batch)
        if self.distributed and len(batch):
            batch = np.asarray(batch, dtype=np.float64)
            self.count += len(batch)
            self.total += batch.sum(axis=0)
            self.total_squares += np.square(batch).sum(axis=0)

    def finish(self) -> None:
        """Under torch.distributed, replace each rank's statistics by those of all ranks' samples."""
        if not self.distributed:
            return
        size = self.total.size
        summed = np.asarray(self.agent.sum_over_ranks(np.concatenate([[float(self.count)], self.total.ravel(), self.total_squares.ravel()])))
        for buffer, value in zip((self.stats.mean, self.stats.var, self.stats.count), self.start):
            buffer.copy_(value)
        count = summed[0]
        if count == 0:
            return
        mean = summed[1 : 1 + size] / count
        variance = np.maximum(summed[1 + size :] / count - np.square(mean), 0.0)
        shape = self.stats.mean.shape
        self.stats.update_from_moments(torch.as_tensor(mean.reshape(shape)), torch.as_tensor(variance.reshape(shape)), count)
