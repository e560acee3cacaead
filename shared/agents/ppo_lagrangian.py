"""PPO-Lagrangian: PPO on the Lagrangian of a constrained MDP, with a cost critic and a learned multiplier.

Method: Ray, Achiam and Amodei 2019, "Benchmarking Safe Exploration in Deep Reinforcement Learning"
(the PPO-Lagrangian baseline of Safety Gym). The policy maximises ``J_r - lambda * (J_c - d)``, where
``J_c`` is the expected episodic cost (``info["cost"]`` summed over an episode) and ``d`` the
``cost_limit``. The multiplier lambda >= 0 is learned by gradient ascent on ``lambda * (J_c - d)``, so
it rises while the measured episodic cost exceeds the limit and falls (down to 0) while it is below.

The advantage of the surrogate is ``(A_r - lambda * A_c) / (1 + lambda)``, with ``A_c`` from a
separate cost critic trained on cost returns. Dividing by ``1 + lambda`` keeps the step size
comparable as lambda grows. Multiplier defaults follow OmniSafe's PPOLag configuration
(``lagrangian_multiplier_init`` 0.001, ``lambda_lr`` 0.035 with Adam). OmniSafe's ``cost_limit`` of
25 is for 1000-step Safety-Gymnasium episodes, so scenarios set their own limit for their episode
length (0.75 for a 30-step highway-env episode at the same cost per step).

Supports: discrete and continuous actions; vector envs; needs a cost signal (``info["cost"]``).
Logs ``safety/lagrange_multiplier``, ``safety/episode_cost_estimate`` and ``losses/cost_value_loss``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pydantic import Field
from torch import nn

from shared.agents.base import Capabilities, PooledRunningStats
from shared.agents.policies import clip_to_box
from shared.agents.ppo import PPO, PPOConfig, _explained_variance, ppo_loss
from shared.buffers import compute_gae
from shared.networks import MLP, make_encoder, to_channels_first
from shared.optim import FlatAdam
from shared.rollout import VectorCollector


class PPOLagrangianConfig(PPOConfig):
    """PPO hyperparameters plus the constraint: cost limit, multiplier initialisation and learning rate."""

    cost_limit: float = Field(0.75, ge=0, description="Allowed expected episodic cost d.")
    lagrangian_multiplier_init: float = Field(0.001, ge=0)
    lambda_lr: float = Field(0.035, gt=0, description="Adam learning rate of the multiplier.")
    lambda_upper_bound: float | None = Field(None, gt=0, description="Cap on lambda; null leaves it unbounded.")
    cost_gamma: float = Field(0.99, ge=0, le=1)
    cost_gae_lambda: float = Field(0.95, ge=0, le=1)
    cost_vf_coef: float = Field(0.5, ge=0)


class LagrangeMultiplier(nn.Module):
    """A non-negative multiplier updated by Adam on the loss ``-lambda * (J_c - d)``.

    After each step the raw parameter is projected back onto ``[0, upper_bound]``.
    """

    def __init__(self, init: float, lr: float, upper_bound: float | None = None):
        super().__init__()
        self.raw = nn.Parameter(torch.tensor(float(init)))
        self.upper_bound = upper_bound
        self.optimizer = torch.optim.Adam([self.raw], lr=lr)

    @property
    def value(self) -> float:
        return float(self.raw.detach())

    def update(self, episode_cost: float, cost_limit: float) -> float:
        """Take one ascent step on ``lambda * (episode_cost - cost_limit)``; return the new lambda."""
        self.optimizer.zero_grad()
        loss = -self.raw * (float(episode_cost) - float(cost_limit))
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            self.raw.clamp_(min=0.0, max=self.upper_bound if self.upper_bound is not None else float("inf"))
        return self.value


class CostCritic(nn.Module):
    """V_c(obs): the expected discounted cost, with its own encoder and MLP."""

    def __init__(self, observation_space: Any, hidden_sizes: list[int], activation: str, network: str):
        super().__init__()
        self.observation_space = observation_space
        self.encoder = make_encoder(network, observation_space)
        self.head = MLP(self.encoder.features_dim, 1, hidden_sizes, activation, output_std=1.0)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        obs = to_channels_first(obs, self.observation_space)
        return self.head(self.encoder(obs if obs.dtype == torch.uint8 else obs.float())).squeeze(-1)


class PPOLagrangian(PPO):
    """PPO-Lagrangian agent; see the module docstring for the method and its defaults."""

    name = "ppo_lagrangian"
    Config = PPOLagrangianConfig
    capabilities = Capabilities(discrete=True, continuous=True, vector_envs=True, cost_signal=True)
    config: PPOLagrangianConfig

    def __init__(self, observation_space, action_space, config: PPOLagrangianConfig, **kwargs: Any) -> None:
        super().__init__(observation_space, action_space, config, **kwargs)
        self.cost_critic = CostCritic(observation_space, config.hidden_sizes, config.activation, config.network).to(self.device)
        # One optimiser over actor, critic and cost critic, so one global gradient norm is clipped.
        self.optimizer = FlatAdam([*self.policy.parameters(), *self.cost_critic.parameters()], lr=config.learning_rate, eps=1e-5)
        self.manual = None  # the cost terms of this loss are differentiated by autograd
        self.lagrange = LagrangeMultiplier(config.lagrangian_multiplier_init, config.lambda_lr, config.lambda_upper_bound)
        self.episode_cost_estimate = 0.0
        self._running_costs = np.zeros(self.num_envs, dtype=np.float64)

    def modules(self) -> dict[str, nn.Module]:
        return {**super().modules(), "cost_critic": self.cost_critic, "lagrange": self.lagrange}

    def optimizers(self) -> dict[str, Any]:
        return {**super().optimizers(), "lagrange_optimizer": self.lagrange.optimizer}

    def extra_state(self) -> dict[str, Any]:
        return {**super().extra_state(), "episode_cost_estimate": self.episode_cost_estimate}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        super().load_extra_state(state)
        self.episode_cost_estimate = float(state.get("episode_cost_estimate", 0.0))

    def _cost_value(self, obs: torch.Tensor) -> torch.Tensor:
        """Return V_c on observations normalised the same way as the policy's."""
        if obs.dtype != torch.uint8:
            obs = self.policy.normalizer(obs.float())
        return self.cost_critic(obs)

    def train_iteration(self, collector: VectorCollector) -> dict[str, float]:
        config = self.config
        policy = self.policy
        steps, envs = config.num_steps, self.num_envs

        if config.anneal_lr:  # linear decay over the step budget, as in PPO
            fraction = 1.0 - self.budget_fraction(collector.global_step)
            self.optimizer.param_groups[0]["lr"] = max(fraction, 0.0) * config.learning_rate
        self.iteration += 1

        # Rollout, recording costs and cost values beside rewards and values.
        obs_buffer = np.zeros((steps, envs, *collector.obs.shape[1:]), dtype=collector.obs.dtype)
        action_shape = self.action_space.shape if policy.continuous else ()
        actions = torch.zeros((steps, envs, *action_shape), dtype=torch.float32 if policy.continuous else torch.long)
        log_probs = torch.zeros((steps, envs))
        values = np.zeros((steps, envs), dtype=np.float32)
        cost_values = np.zeros((steps, envs), dtype=np.float32)
        rewards = np.zeros((steps, envs), dtype=np.float32)
        costs = np.zeros((steps, envs), dtype=np.float32)
        terminations = np.zeros((steps, envs), dtype=np.float32)
        dones = np.zeros((steps, envs), dtype=np.float32)
        valid = np.zeros((steps, envs), dtype=bool)
        finished_costs: list[float] = []
        observation_stats = PooledRunningStats(policy.normalizer.stats, self) if config.normalize_observation else None
        reward_stats = PooledRunningStats(self.reward_scaler.stats, self) if config.normalize_reward else None
        for t in range(steps):
            obs_buffer[t] = collector.obs
            if observation_stats is not None:
                observation_stats.update(collector.obs[~collector.prev_done])  # final observations were counted on the step before
            with torch.no_grad():
                obs_t = torch.as_tensor(collector.obs, device=self.device)
                action, log_prob, _, value = policy.action_and_value(obs_t)
                cost_value = self._cost_value(obs_t)
            step = collector.step(clip_to_box(action.cpu().numpy(), self.action_space))
            actions[t] = action.cpu()
            log_probs[t] = log_prob.cpu()
            values[t] = value.cpu().numpy()
            cost_values[t] = cost_value.cpu().numpy()
            valid[t] = step.valid
            ended = step.terminated | step.truncated
            rewards[t] = self.reward_scaler.scale(step.rewards, ended, step.valid, reward_stats) if config.normalize_reward else step.rewards
            costs[t] = np.where(step.valid, step.costs, 0.0)
            terminations[t] = step.terminated
            dones[t] = ended
            self._running_costs += costs[t]
            for env in np.flatnonzero(ended & step.valid):
                finished_costs.append(float(self._running_costs[env]))
                self._running_costs[env] = 0.0
        for pooled in (observation_stats, reward_stats):
            if pooled is not None:
                pooled.finish()
        with torch.no_grad():
            last_obs = torch.as_tensor(collector.obs, device=self.device)
            last_value = policy.value(last_obs).cpu().numpy()
            last_cost_value = self._cost_value(last_obs).cpu().numpy()

        # Multiplier step on this rollout's finished episodes (the previous estimate when none
        # finished). Under torch.distributed the estimate pools every rank's episodes, so the
        # ranks' multipliers stay equal.
        cost_sum, episodes = self.sum_over_ranks([float(np.sum(finished_costs)), float(len(finished_costs))])
        if episodes > 0:
            self.episode_cost_estimate = cost_sum / episodes
        multiplier = self.lagrange.update(self.episode_cost_estimate, config.cost_limit)

        advantages, returns = compute_gae(rewards, values, terminations, dones, valid, last_value, config.gamma, config.gae_lambda)
        cost_advantages, cost_returns = compute_gae(
            costs, cost_values, terminations, dones, valid, last_cost_value, config.cost_gamma, config.cost_gae_lambda
        )

        flat_valid = np.flatnonzero(valid.reshape(-1))
        b_obs = torch.as_tensor(obs_buffer.reshape(steps * envs, *obs_buffer.shape[2:])[flat_valid], device=self.device)
        b_actions = actions.reshape(steps * envs, *action_shape)[flat_valid].to(self.device)
        b_log_probs = log_probs.reshape(-1)[flat_valid].to(self.device)
        b_advantages = torch.as_tensor(advantages.reshape(-1)[flat_valid], device=self.device)
        b_returns = torch.as_tensor(returns.reshape(-1)[flat_valid], device=self.device)
        b_values = torch.as_tensor(values.reshape(-1)[flat_valid], device=self.device)
        b_cost_advantages = torch.as_tensor(cost_advantages.reshape(-1)[flat_valid], device=self.device)
        b_cost_returns = torch.as_tensor(cost_returns.reshape(-1)[flat_valid], device=self.device)
        # Cost advantages are centred (not scaled) over the batch, so their size relative to the
        # reward advantages still carries how costly an action is.
        b_cost_advantages = b_cost_advantages - b_cost_advantages.mean()

        count = len(flat_valid)
        stats: dict[str, list[float]] = {"policy_loss": [], "value_loss": [], "entropy": [], "approx_kl": [], "clipfrac": [], "cost_value_loss": []}
        for _epoch in range(config.update_epochs):
            # Exactly num_minibatches minibatches, whatever the number of valid steps, because
            # under torch.distributed every rank must take the same number of gradient steps.
            order = torch.randperm(count)
            for index in order.tensor_split(min(config.num_minibatches, count)):
                _, new_log_prob, entropy, new_value = policy.action_and_value(b_obs[index], b_actions[index])
                reward_advantages = b_advantages[index]
                if config.norm_adv and len(index) > 1:
                    reward_advantages = (reward_advantages - reward_advantages.mean()) / (reward_advantages.std() + 1e-8)
                combined = (reward_advantages - multiplier * b_cost_advantages[index]) / (1.0 + multiplier)
                loss, parts = ppo_loss(
                    new_log_prob, b_log_probs[index], combined, new_value, b_values[index], b_returns[index],
                    entropy, config.clip_coef, config.clip_vloss, config.ent_coef, config.vf_coef,
                )
                cost_value_loss = 0.5 * ((self._cost_value(b_obs[index]) - b_cost_returns[index]) ** 2).mean()
                loss = loss + config.cost_vf_coef * cost_value_loss
                self.optimizer.zero_grad()
                loss.backward()
                self.average_gradients()
                self.optimizer.clip_grad_norm_(config.max_grad_norm)
                self.optimizer.step()
                for key, value in parts.items():
                    stats[key].append(float(value))
                stats["cost_value_loss"].append(float(cost_value_loss.detach()))
            if config.target_kl is not None:
                (kl_sum,) = self.sum_over_ranks([float(np.mean(stats["approx_kl"][-config.num_minibatches :]))])
                if kl_sum / self.world_size() > config.target_kl:
                    break

        logs = {f"losses/{key}": float(np.mean(v)) for key, v in stats.items() if v}
        logs["losses/explained_variance"] = _explained_variance(values.reshape(-1)[flat_valid], returns.reshape(-1)[flat_valid])
        logs["charts/learning_rate"] = self.optimizer.param_groups[0]["lr"]
        logs["safety/lagrange_multiplier"] = multiplier
        logs["safety/episode_cost_estimate"] = self.episode_cost_estimate
        return logs
