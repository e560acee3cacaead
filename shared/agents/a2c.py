"""Advantage Actor-Critic, the synchronous variant of A3C.

Paper: Mnih et al. 2016, "Asynchronous Methods for Deep Reinforcement Learning" (arXiv:1602.01783).
As in the common synchronous implementations, the envs of one vector env step in lockstep and one
gradient step follows each short rollout. Advantages are n-step returns minus the value (GAE with
lambda 1 by default), and RMSprop is the optimiser the paper used.

Supports: discrete and continuous (diagonal Gaussian) actions; vector envs; no cost signal.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from shared.agents.base import Agent, AgentConfig, Capabilities, PooledRunningStats
from shared.agents.policies import ActorCritic, clip_to_box
from shared.buffers import compute_gae
from shared.rollout import VectorCollector


class A2CConfig(AgentConfig):
    """A2C hyperparameters; defaults follow the paper's Atari settings scaled to classic control."""

    learning_rate: float = Field(7e-4, gt=0)
    anneal_lr: bool = False
    optimizer: Literal["rmsprop", "adam"] = "rmsprop"
    rmsprop_alpha: float = Field(0.99, gt=0, lt=1)
    rmsprop_eps: float = Field(1e-5, gt=0)
    num_steps: int = Field(5, ge=1, description="Steps per env in each rollout.")
    gamma: float = Field(0.99, ge=0, le=1)
    gae_lambda: float = Field(1.0, ge=0, le=1)
    ent_coef: float = Field(0.01, ge=0)
    vf_coef: float = Field(0.5, ge=0)
    max_grad_norm: float = Field(0.5, gt=0)
    norm_adv: bool = False
    hidden_sizes: list[int] = Field(default_factory=lambda: [64, 64])
    activation: Literal["tanh", "relu", "elu", "gelu"] = "tanh"
    network: str = "auto"
    normalize_observation: bool = False
    log_std_init: float = 0.0


class A2C(Agent):
    """A2C agent; see the module docstring for the paper and what it supports."""

    name = "a2c"
    Config = A2CConfig
    capabilities = Capabilities(discrete=True, continuous=True, vector_envs=True, cost_signal=False)
    config: A2CConfig

    def __init__(self, observation_space, action_space, config: A2CConfig, **kwargs: Any) -> None:
        super().__init__(observation_space, action_space, config, **kwargs)
        self.policy = ActorCritic(
            observation_space, action_space, config.hidden_sizes, config.activation, config.network,
            config.normalize_observation, config.log_std_init,
        ).to(self.device)
        if config.optimizer == "rmsprop":
            self.optimizer: torch.optim.Optimizer = torch.optim.RMSprop(
                self.policy.parameters(), lr=config.learning_rate, alpha=config.rmsprop_alpha, eps=config.rmsprop_eps, foreach=True
            )
        else:
            self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=config.learning_rate, foreach=True)
        self.num_iterations = max(self.total_steps // (config.num_steps * self.num_envs), 1)
        self.iteration = 0

    def modules(self) -> dict[str, nn.Module]:
        return {"policy": self.policy}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"optimizer": self.optimizer}

    def extra_state(self) -> dict[str, Any]:
        return {"iteration": self.iteration}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.iteration = int(state["iteration"])

    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        with torch.no_grad():
            obs_t = torch.as_tensor(obs, device=self.device)
            action = self.policy.deterministic_action(obs_t) if deterministic else self.policy.distribution(obs_t).sample()
        return clip_to_box(action.cpu().numpy(), self.action_space)

    def train_iteration(self, collector: VectorCollector) -> dict[str, float]:
        config = self.config
        policy = self.policy
        steps, envs = config.num_steps, self.num_envs

        # Learning-rate annealing: linear decay to 0 over the step budget. Progress is measured in
        # valid environment steps, the unit of the budget, so masked autoreset steps do not skew it.
        if config.anneal_lr:
            fraction = 1.0 - self.budget_fraction(collector.global_step)
            self.optimizer.param_groups[0]["lr"] = max(fraction, 0.0) * config.learning_rate
        self.iteration += 1

        # Rollout: keep the graph of every step, since A2C takes a single gradient step on it.
        log_probs, entropies, values_t = [], [], []
        rewards = np.zeros((steps, envs), dtype=np.float32)
        terminations = np.zeros((steps, envs), dtype=np.float32)
        dones = np.zeros((steps, envs), dtype=np.float32)
        valid = np.zeros((steps, envs), dtype=bool)
        observation_stats = PooledRunningStats(policy.normalizer.stats, self) if config.normalize_observation else None
        for t in range(steps):
            if observation_stats is not None:
                observation_stats.update(collector.obs[~collector.prev_done])
            action, log_prob, entropy, value = policy.action_and_value(torch.as_tensor(collector.obs, device=self.device))
            step = collector.step(clip_to_box(action.detach().cpu().numpy(), self.action_space))
            log_probs.append(log_prob)
            entropies.append(entropy)
            values_t.append(value)
            rewards[t] = step.rewards
            terminations[t] = step.terminated
            dones[t] = step.terminated | step.truncated
            valid[t] = step.valid
        if observation_stats is not None:
            observation_stats.finish()
        with torch.no_grad():
            last_value = policy.value(torch.as_tensor(collector.obs, device=self.device)).cpu().numpy()

        # n-step advantages; the autoreset dummy steps are masked out of every term of the loss.
        values = torch.stack(values_t)
        advantages, returns = compute_gae(rewards, values.detach().cpu().numpy(), terminations, dones, valid, last_value, config.gamma, config.gae_lambda)
        mask = torch.as_tensor(valid, dtype=torch.float32, device=self.device)
        count = mask.sum().clamp(min=1.0)
        advantages_t = torch.as_tensor(advantages, device=self.device)
        if config.norm_adv:
            mean = (advantages_t * mask).sum() / count
            std = torch.sqrt((((advantages_t - mean) * mask) ** 2).sum() / count + 1e-8)
            advantages_t = (advantages_t - mean) / std
        returns_t = torch.as_tensor(returns, device=self.device)

        # One gradient step on policy loss + value loss - entropy bonus.
        policy_loss = -(torch.stack(log_probs) * advantages_t * mask).sum() / count
        value_loss = 0.5 * (((values - returns_t) ** 2) * mask).sum() / count
        entropy = (torch.stack(entropies) * mask).sum() / count
        loss = policy_loss + config.vf_coef * value_loss - config.ent_coef * entropy
        self.optimizer.zero_grad()
        loss.backward()
        self.average_gradients()
        nn.utils.clip_grad_norm_(policy.parameters(), config.max_grad_norm)
        self.optimizer.step()
        return {
            "losses/policy_loss": float(policy_loss.detach()),
            "losses/value_loss": float(value_loss.detach()),
            "losses/entropy": float(entropy.detach()),
            "charts/learning_rate": self.optimizer.param_groups[0]["lr"],
        }
