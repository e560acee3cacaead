"""Deep Q-Network, with Double DQN, dueling heads and n-step returns as options.

Papers: Mnih et al. 2015, "Human-level control through deep reinforcement learning" (Nature 518);
van Hasselt et al. 2016, "Deep Reinforcement Learning with Double Q-learning" (``double_q``);
Wang et al. 2016, "Dueling Network Architectures for Deep Reinforcement Learning" (``dueling``);
n-step targets as in Hessel et al. 2018 (Rainbow) (``n_step``).

The online network acts epsilon-greedily; epsilon decays linearly over ``exploration_fraction`` of
the budget. Transitions go to a replay buffer (autoreset dummies excluded); after
``learning_starts`` steps, every ``train_frequency`` vector steps run ``gradient_steps`` updates
on uniform minibatches, and the target network follows the online one every
``target_update_interval`` environment steps (Polyak averaging when ``tau < 1``).

Supports: discrete actions only; vector envs; no cost signal.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from shared.agents.base import Agent, AgentConfig, Capabilities
from shared.agents.manual_gradients import MLPDQNGradients, NumpyGreedy, supports_q_network
from shared.agents.policies import QNetwork, linear_schedule
from shared.buffers import ReplayBuffer
from shared.optim import FlatAdam
from shared.rollout import VectorCollector


class DQNConfig(AgentConfig):
    """DQN hyperparameters; defaults are a classic-control starting point."""

    learning_rate: float = Field(2.5e-4, gt=0)
    buffer_size: int = Field(10_000, ge=1)
    batch_size: int = Field(128, ge=1)
    gamma: float = Field(0.99, ge=0, le=1)
    tau: float = Field(1.0, gt=0, le=1)
    target_update_interval: int = Field(500, ge=1, description="Environment steps between target-network updates.")
    learning_starts: int = Field(10_000, ge=0)
    train_frequency: int = Field(10, ge=1, description="Vector steps between rounds of gradient steps.")
    gradient_steps: int = Field(1, ge=1)
    exploration_initial_eps: float = Field(1.0, ge=0, le=1)
    exploration_final_eps: float = Field(0.05, ge=0, le=1)
    exploration_fraction: float = Field(0.5, gt=0, le=1)
    double_q: bool = False
    dueling: bool = False
    n_step: int = Field(1, ge=1)
    loss: Literal["huber", "mse"] = "mse"
    max_grad_norm: float | None = Field(10.0, gt=0)
    hidden_sizes: list[int] = Field(default_factory=lambda: [120, 84])
    activation: Literal["tanh", "relu", "elu", "gelu"] = "relu"
    network: str = "auto"
    eval_eps: float = Field(0.0, ge=0, le=1, description="Epsilon used by act(deterministic=True), e.g. 0.05 on Atari.")
    manual_gradients: bool = Field(
        True,
        description="Use the hand-derived gradients and NumPy acting of shared.agents.manual_gradients when the Q-network "
        "is an MLP on flat observations without the dueling head (same loss, faster on small networks); false always uses autograd.",
    )


def dqn_target(
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    next_q_target: torch.Tensor,
    next_q_online: torch.Tensor | None,
) -> torch.Tensor:
    """Return the TD target ``r + discount * Q_target(s', a*)``.

    ``a*`` is the arg-max of the target network itself (DQN), or of the online network when
    ``next_q_online`` is given (Double DQN), which removes the max operator's overestimation bias.
    ``discounts`` already contains gamma^n, or 0 where the episode terminated.
    """
    if next_q_online is None:
        next_value = next_q_target.max(dim=1).values
    else:
        best = next_q_online.argmax(dim=1, keepdim=True)
        next_value = next_q_target.gather(1, best).squeeze(1)
    return rewards + discounts * next_value


class DQN(Agent):
    """DQN agent; see the module docstring for the papers and what it supports."""

    name = "dqn"
    Config = DQNConfig
    capabilities = Capabilities(discrete=True, continuous=False, vector_envs=True, cost_signal=False)
    config: DQNConfig

    def __init__(self, observation_space, action_space, config: DQNConfig, **kwargs: Any) -> None:
        super().__init__(observation_space, action_space, config, **kwargs)
        build = lambda: QNetwork(observation_space, action_space, config.hidden_sizes, config.activation, config.network, config.dueling)  # noqa: E731
        self.q_network = build().to(self.device)
        self.target_network = build().to(self.device)
        self.target_network.load_state_dict(self.q_network.state_dict())
        self.optimizer = FlatAdam(self.q_network.parameters(), lr=config.learning_rate)
        self.manual = MLPDQNGradients(self.q_network, config.loss) if config.manual_gradients and supports_q_network(self.q_network) else None
        self._numpy_greedy: NumpyGreedy | None = None
        self.buffer = ReplayBuffer(
            config.buffer_size,
            observation_space.shape,
            observation_space.dtype,
            (),
            np.int64,
            self.num_envs,
            config.gamma,
            config.n_step,
            seed=self.seed,
        )
        self.rng = np.random.default_rng(self.seed + 1)
        self.env_steps = 0
        self.last_target_update = 0
        self.epsilon = config.exploration_initial_eps

    def modules(self) -> dict[str, nn.Module]:
        return {"q_network": self.q_network, "target_network": self.target_network}

    def optimizers(self) -> dict[str, FlatAdam]:  # type: ignore[override]
        return {"optimizer": self.optimizer}

    def extra_state(self) -> dict[str, Any]:
        return {
            "env_steps": self.env_steps,
            "last_target_update": self.last_target_update,
            "rng": self.rng.bit_generator.state,
            "buffer": self.buffer.state_counters(),
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.env_steps = int(state["env_steps"])
        self.last_target_update = int(state["last_target_update"])
        self.rng.bit_generator.state = state["rng"]
        self._buffer_counters = state["buffer"]

    def buffers_state(self) -> dict[str, np.ndarray]:
        return self.buffer.state_arrays()

    def load_buffers_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.buffer.load_state(arrays, self._buffer_counters)

    def compile(self) -> None:
        """Compile the networks; the compiled forward passes then go through autograd, not the manual path."""
        self.manual = None
        super().compile()

    def _greedy(self, obs: np.ndarray) -> np.ndarray:
        if self.manual is not None:
            first = self.q_network.head.linears[0].weight
            if self._numpy_greedy is None or self._numpy_greedy.layers[0][0].ctypes.data != first.data_ptr():
                self._numpy_greedy = NumpyGreedy.build(self.q_network)  # views of the current parameter storage
            if self._numpy_greedy is not None:
                return self._numpy_greedy(obs)
        with torch.no_grad():
            return self.q_network(torch.as_tensor(obs, device=self.device)).argmax(dim=1).cpu().numpy()

    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        epsilon = self.config.eval_eps if deterministic else self.epsilon
        if epsilon <= 0:
            return self._greedy(obs)
        count = len(obs)
        explore = self.rng.random(count) < epsilon
        random_actions = self.rng.integers(0, self.action_space.n, size=count)
        if explore.all():  # skip the forward pass when every env explores (always, before learning starts)
            return random_actions
        return np.where(explore, random_actions, self._greedy(obs))

    def train_iteration(self, collector: VectorCollector) -> dict[str, float]:
        config = self.config

        # Act epsilon-greedily for train_frequency vector steps and store the valid transitions.
        for _ in range(config.train_frequency):
            self.epsilon = linear_schedule(
                config.exploration_initial_eps, config.exploration_final_eps, self.env_steps / (config.exploration_fraction * self.total_steps)
            )
            actions = self.act(collector.obs)
            step = collector.step(actions)
            self.buffer.add(step.obs, step.actions, step.rewards, step.next_obs, step.terminated, step.truncated, step.valid)
            self.env_steps = collector.global_step

        # Ranks count different numbers of valid steps, because their episodes end at different
        # times. They decide on the mean count whether to train and when to update the target
        # network, because a rank that trained alone would wait forever in the gradient all-reduce.
        steps_sum, short_buffers = self.sum_over_ranks([self.env_steps, len(self.buffer) < config.batch_size])
        env_steps = round(steps_sum / self.world_size())
        logs: dict[str, float] = {"charts/epsilon": self.epsilon}
        if env_steps < config.learning_starts or short_buffers > 0:
            return logs

        # Gradient steps on the TD error against the target network. The target network does not
        # change during this loop, so all minibatches are sampled at once and their target-network
        # values come from one batched forward pass instead of one pass per gradient step.
        steps, size = config.gradient_steps, config.batch_size
        batch = self.buffer.sample(steps * size)
        all_obs = torch.as_tensor(batch["obs"], device=self.device)
        all_next_obs = torch.as_tensor(batch["next_obs"], device=self.device)
        all_actions = torch.as_tensor(batch["actions"], device=self.device).long()
        all_returns = torch.as_tensor(batch["returns"], device=self.device)
        all_discounts = torch.as_tensor(batch["discounts"], device=self.device)
        with torch.no_grad():
            all_next_q_target = self.target_network(all_next_obs)
            # Without Double DQN the targets depend on the target network only, so all are computed at once.
            all_targets = None if config.double_q else dqn_target(all_returns, all_discounts, all_next_q_target, None)
        td_losses, q_values, td_errors = [], [], []
        distributed = self.distributed()
        for step in range(steps):
            part = slice(step * size, (step + 1) * size)
            obs, actions = all_obs[part], all_actions[part]
            if all_targets is not None:
                target = all_targets[part]
            else:
                with torch.no_grad():
                    # Double DQN picks the next action with the online network as it is now.
                    target = dqn_target(all_returns[part], all_discounts[part], all_next_q_target[part], self.q_network(all_next_obs[part]))
            if self.manual is not None:
                error, q_taken = self.manual.grad(obs, actions, target)
                td_errors.append(error)  # the loss is computed once after the loop
                q_values.append(q_taken)
            else:
                q = self.q_network(obs).gather(1, actions.unsqueeze(1)).squeeze(1)
                loss = F.smooth_l1_loss(q, target) if config.loss == "huber" else F.mse_loss(q, target)
                td_losses.append(loss.detach())
                q_values.append(q.detach())
                self.optimizer.zero_grad()
                loss.backward()
            if distributed:
                self.average_gradients()
            if config.max_grad_norm is not None:
                self.optimizer.clip_grad_norm_(config.max_grad_norm)
            self.optimizer.step()

        # Target network: hard copy (tau = 1) or Polyak averaging every target_update_interval steps.
        if env_steps - self.last_target_update >= config.target_update_interval:
            with torch.no_grad():
                for target_param, param in zip(self.target_network.parameters(), self.q_network.parameters()):
                    target_param.mul_(1.0 - config.tau).add_(config.tau * param)
            self.last_target_update = env_steps

        # Every minibatch has batch_size samples, so the mean over all samples is the mean of the minibatch means.
        logs["losses/td_loss"] = float(self.manual.td_loss(torch.cat(td_errors)) if self.manual is not None else torch.stack(td_losses).mean())
        logs["losses/q_values"] = float(torch.cat(q_values).mean())
        return logs
