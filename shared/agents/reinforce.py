"""REINFORCE with a learned baseline: Monte Carlo policy gradient over complete episodes.

Paper: Williams 1992, "Simple Statistical Gradient-Following Algorithms for Connectionist
Reinforcement Learning" (Machine Learning 8). The baseline is a learned state-value function,
which lowers variance without biasing the gradient (Sutton and Barto 2018, section 13.4).

Each iteration steps the vector env until ``episodes_per_update`` episodes have finished, then
takes one gradient step on those episodes. Unfinished episodes carry over to the next iteration.
A time-limit truncation bootstraps the return with the baseline's value of the final observation;
a termination does not.

Supports: discrete and continuous (diagonal Gaussian) actions; vector envs; no cost signal.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from shared.agents.base import Agent, AgentConfig, Capabilities
from shared.agents.policies import ActorCritic, clip_to_box
from shared.buffers import returns_to_go
from shared.rollout import VectorCollector


class ReinforceConfig(AgentConfig):
    """REINFORCE hyperparameters."""

    learning_rate: float = Field(1e-3, gt=0)
    value_learning_rate: float = Field(1e-3, gt=0)
    gamma: float = Field(0.99, ge=0, le=1)
    episodes_per_update: int = Field(8, ge=1)
    ent_coef: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    norm_adv: bool = True
    hidden_sizes: list[int] = Field(default_factory=lambda: [64, 64])
    activation: Literal["tanh", "relu", "elu", "gelu"] = "tanh"
    network: str = "auto"
    log_std_init: float = 0.0


class Reinforce(Agent):
    """REINFORCE agent; see the module docstring for the paper and what it supports."""

    name = "reinforce"
    Config = ReinforceConfig
    capabilities = Capabilities(discrete=True, continuous=True, vector_envs=True, cost_signal=False)
    config: ReinforceConfig

    def __init__(self, observation_space, action_space, config: ReinforceConfig, **kwargs: Any) -> None:
        super().__init__(observation_space, action_space, config, **kwargs)
        self.policy = ActorCritic(
            observation_space, action_space, config.hidden_sizes, config.activation, config.network, False, config.log_std_init
        ).to(self.device)
        actor_parameters = [p for name, p in self.policy.named_parameters() if not name.startswith("critic")]
        self.optimizer = torch.optim.Adam(
            [
                {"params": actor_parameters, "lr": config.learning_rate},
                {"params": self.policy.critic.parameters(), "lr": config.value_learning_rate},
            ],
            foreach=True,
        )
        self._open: list[list[tuple[np.ndarray, np.ndarray, float]]] = [[] for _ in range(self.num_envs)]

    def modules(self) -> dict[str, nn.Module]:
        return {"policy": self.policy}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"optimizer": self.optimizer}

    def buffers_state(self) -> dict[str, np.ndarray]:
        arrays: dict[str, np.ndarray] = {}
        for env, episode in enumerate(self._open):
            if episode:
                arrays[f"open_obs_{env}"] = np.stack([step[0] for step in episode])
                arrays[f"open_actions_{env}"] = np.stack([np.asarray(step[1]) for step in episode])
                arrays[f"open_rewards_{env}"] = np.array([step[2] for step in episode], dtype=np.float64)
        return arrays

    def load_buffers_state(self, arrays: dict[str, np.ndarray]) -> None:
        for env in range(self.num_envs):
            self._open[env] = []
            if f"open_obs_{env}" in arrays:
                for o, a, r in zip(arrays[f"open_obs_{env}"], arrays[f"open_actions_{env}"], arrays[f"open_rewards_{env}"]):
                    self._open[env].append((o, a, float(r)))

    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        with torch.no_grad():
            obs_t = torch.as_tensor(obs, device=self.device)
            action = self.policy.deterministic_action(obs_t) if deterministic else self.policy.distribution(obs_t).sample()
        return clip_to_box(action.cpu().numpy(), self.action_space)

    def train_iteration(self, collector: VectorCollector) -> dict[str, float]:
        config = self.config

        # Collect until enough complete episodes are available.
        finished: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        while len(finished) < config.episodes_per_update:
            with torch.no_grad():
                action = self.policy.distribution(torch.as_tensor(collector.obs, device=self.device)).sample().cpu().numpy()
            step = collector.step(clip_to_box(action, self.action_space))
            for env in np.flatnonzero(step.valid):
                self._open[env].append((step.obs[env], action[env], float(step.rewards[env])))
                if step.terminated[env] or step.truncated[env]:
                    bootstrap = 0.0
                    if step.truncated[env] and not step.terminated[env]:
                        with torch.no_grad():
                            bootstrap = float(self.policy.value(torch.as_tensor(step.next_obs[env : env + 1], device=self.device))[0])
                    episode = self._open[env]
                    self._open[env] = []
                    rewards = np.array([s[2] for s in episode], dtype=np.float32)
                    finished.append((np.stack([s[0] for s in episode]), np.stack([np.asarray(s[1]) for s in episode]), returns_to_go(rewards, config.gamma, bootstrap)))

        # One gradient step on the policy-gradient loss with the baseline, plus the baseline's regression loss.
        obs = torch.as_tensor(np.concatenate([e[0] for e in finished]), device=self.device)
        actions = torch.as_tensor(np.concatenate([e[1] for e in finished]), device=self.device)
        returns = torch.as_tensor(np.concatenate([e[2] for e in finished]), device=self.device)
        _, log_prob, entropy, values = self.policy.action_and_value(obs, actions)
        advantages = returns - values.detach()
        if config.norm_adv and len(advantages) > 1:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        policy_loss = -(log_prob * advantages).mean()
        value_loss = 0.5 * ((values - returns) ** 2).mean()
        loss = policy_loss + value_loss - config.ent_coef * entropy.mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.average_gradients()
        nn.utils.clip_grad_norm_(self.policy.parameters(), config.max_grad_norm)
        self.optimizer.step()
        return {
            "losses/policy_loss": float(policy_loss.detach()),
            "losses/value_loss": float(value_loss.detach()),
            "losses/entropy": float(entropy.mean().detach()),
            "charts/learning_rate": config.learning_rate,
        }
