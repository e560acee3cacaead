"""Proximal Policy Optimization with a clipped surrogate objective.

Paper: Schulman et al. 2017, "Proximal Policy Optimization Algorithms" (arXiv:1707.06347), with
GAE from Schulman et al. 2016 and the implementation details catalogued by Huang et al. 2022
("The 37 Implementation Details of Proximal Policy Optimization"): orthogonal initialisation,
Adam with eps 1e-5, learning-rate annealing, advantage normalisation per minibatch, a clipped value
loss, global gradient clipping and an optional early stop on approximate KL.

Supports: discrete and continuous (diagonal Gaussian) actions; vector envs; no cost signal (see
``ppo_lagrangian``).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from shared.agents.base import Agent, AgentConfig, Capabilities, PooledRunningStats
from shared.agents.policies import ActorCritic, clip_to_box
from shared.agents.manual_gradients import LossSettings, MLPPPOGradients, NumpySampler, supports, twin_parameter_order
from shared.buffers import compute_gae
from shared.networks import RunningMeanStd
from shared.optim import FlatAdam
from shared.rollout import VectorCollector


class PPOConfig(AgentConfig):
    """PPO hyperparameters; defaults are the reference values for classic control."""

    learning_rate: float = Field(2.5e-4, gt=0)
    anneal_lr: bool = True
    num_steps: int = Field(128, ge=1, description="Steps per env in each rollout.")
    gamma: float = Field(0.99, ge=0, le=1)
    gae_lambda: float = Field(0.95, ge=0, le=1)
    num_minibatches: int = Field(4, ge=1)
    update_epochs: int = Field(4, ge=1)
    norm_adv: bool = True
    clip_coef: float = Field(0.2, gt=0)
    clip_vloss: bool = True
    ent_coef: float = Field(0.01, ge=0)
    vf_coef: float = Field(0.5, ge=0)
    max_grad_norm: float = Field(0.5, gt=0)
    target_kl: float | None = Field(None, gt=0)
    hidden_sizes: list[int] = Field(default_factory=lambda: [64, 64])
    activation: Literal["tanh", "relu", "elu", "gelu"] = "tanh"
    network: str = "auto"
    normalize_observation: bool = False
    normalize_reward: bool = False
    log_std_init: float = 0.0
    manual_gradients: bool = Field(
        True,
        description="Use the hand-derived gradients of shared.agents.manual_gradients when the policy is an MLP "
        "actor-critic on flat observations (same loss, several times faster on small networks); false always uses autograd. "
        "ppo_lagrangian always uses autograd.",
    )


def ppo_loss(
    new_log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    new_values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    entropy: torch.Tensor,
    clip_coef: float,
    clip_vloss: bool,
    ent_coef: float,
    vf_coef: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Return the PPO loss (clipped surrogate + value loss - entropy bonus) and its parts.

    Exposed so that apps with their own policies (self-play, re-rankers) share the exact objective.
    """
    log_ratio = new_log_prob - old_log_prob
    ratio = log_ratio.exp()
    with torch.no_grad():
        approx_kl = ((ratio - 1) - log_ratio).mean()  # the low-variance estimator k3 of Schulman 2020
        clip_fraction = ((ratio - 1.0).abs() > clip_coef).float().mean()

    policy_loss_unclipped = -advantages * ratio
    policy_loss_clipped = -advantages * torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef)
    policy_loss = torch.max(policy_loss_unclipped, policy_loss_clipped).mean()

    if clip_vloss:
        value_loss_unclipped = (new_values - returns) ** 2
        values_clipped = old_values + torch.clamp(new_values - old_values, -clip_coef, clip_coef)
        value_loss_clipped = (values_clipped - returns) ** 2
        value_loss = 0.5 * torch.max(value_loss_unclipped, value_loss_clipped).mean()
    else:
        value_loss = 0.5 * ((new_values - returns) ** 2).mean()

    if ent_coef == 0.0:  # logged only, so keep it out of the backward pass
        entropy_loss = entropy.detach().mean()
        loss = policy_loss + vf_coef * value_loss
    else:
        entropy_loss = entropy.mean()
        loss = policy_loss - ent_coef * entropy_loss + vf_coef * value_loss
    parts = {
        "policy_loss": policy_loss.detach(),
        "value_loss": value_loss.detach(),
        "entropy": entropy_loss.detach(),
        "approx_kl": approx_kl,
        "clipfrac": clip_fraction,
    }
    return loss, parts


PART_NAMES = ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac")  # the loss parts ppo_loss returns, as logged


class RewardScaler(nn.Module):
    """Scale rewards by the running standard deviation of the discounted return (as in the reference PPO)."""

    def __init__(self, num_envs: int, gamma: float):
        super().__init__()
        self.gamma = gamma
        self.stats = RunningMeanStd(())
        # Per-env running returns depend on the number of envs, so they live outside the state
        # dict (whose shapes a checkpoint must match) and are saved with the resume buffers.
        self.running_return = np.zeros(num_envs, dtype=np.float64)

    def scale(self, rewards: np.ndarray, dones: np.ndarray, valid: np.ndarray, pooled: PooledRunningStats | None = None) -> np.ndarray:
        """Return the rewards divided by the return's running std; ``pooled`` (over ranks) wraps ``self.stats``."""
        running = self.running_return
        running[:] = np.where(valid, running * self.gamma + rewards, running)
        (pooled or self.stats).update(running[valid])
        running[:] = np.where(dones, 0.0, running)
        return (rewards / np.sqrt(self.stats.var.item() + 1e-8)).astype(np.float32)


class PPO(Agent):
    """PPO agent; see the module docstring for the paper and what it supports."""

    name = "ppo"
    Config = PPOConfig
    capabilities = Capabilities(discrete=True, continuous=True, vector_envs=True, cost_signal=False)
    config: PPOConfig

    def __init__(self, observation_space, action_space, config: PPOConfig, **kwargs: Any) -> None:
        super().__init__(observation_space, action_space, config, **kwargs)
        self.policy = ActorCritic(
            observation_space,
            action_space,
            config.hidden_sizes,
            config.activation,
            config.network,
            config.normalize_observation,
            config.log_std_init,
        ).to(self.device)
        use_manual = config.manual_gradients and supports(self.policy)
        parameters = twin_parameter_order(self.policy) if use_manual else list(self.policy.parameters())
        self.optimizer = FlatAdam(parameters, lr=config.learning_rate, eps=1e-5)
        self.reward_scaler = RewardScaler(self.num_envs, config.gamma)
        self.batch_size = config.num_steps * self.num_envs
        self.num_iterations = max(self.total_steps // self.batch_size, 1)
        self.iteration = 0
        self.manual: MLPPPOGradients | None = None
        self.sample_rng = np.random.default_rng([self.seed, 1])  # rollout sampling in NumPy (the manual path)
        if use_manual:
            settings = LossSettings(config.clip_coef, config.clip_vloss, config.ent_coef, config.vf_coef)
            self.manual = MLPPPOGradients(self.policy, settings)

    def compile(self) -> None:
        """Compile the networks; the compiled forward passes then go through autograd, not the manual gradients."""
        self.manual = None
        super().compile()

    def modules(self) -> dict[str, nn.Module]:
        return {"policy": self.policy, "reward_scaler": self.reward_scaler}

    def optimizers(self) -> dict[str, FlatAdam]:  # type: ignore[override]
        return {"optimizer": self.optimizer}

    def extra_state(self) -> dict[str, Any]:
        return {"iteration": self.iteration, "sample_rng": self.sample_rng.bit_generator.state}

    def buffers_state(self) -> dict[str, np.ndarray]:
        return {"running_return": self.reward_scaler.running_return.copy()}

    def load_buffers_state(self, arrays: dict[str, np.ndarray]) -> None:
        if "running_return" in arrays and arrays["running_return"].shape == self.reward_scaler.running_return.shape:
            self.reward_scaler.running_return[:] = arrays["running_return"]

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.iteration = int(state["iteration"])
        if "sample_rng" in state:
            self.sample_rng.bit_generator.state = state["sample_rng"]

    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        with torch.no_grad():
            obs_t = torch.as_tensor(obs, device=self.device)
            if deterministic:
                action = self.policy.deterministic_action(obs_t)
            else:
                action = self.policy.distribution(obs_t).sample()
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

        # Rollout: num_steps vector steps with the current policy.
        obs_buffer = np.zeros((steps, envs, *collector.obs.shape[1:]), dtype=collector.obs.dtype)
        action_shape = self.action_space.shape if policy.continuous else ()
        actions = np.zeros((steps, envs, *action_shape), dtype=np.float32 if policy.continuous else np.int64)
        log_probs = np.zeros((steps, envs), dtype=np.float32)
        values = np.zeros((steps, envs), dtype=np.float32)
        rewards = np.zeros((steps, envs), dtype=np.float32)
        terminations = np.zeros((steps, envs), dtype=np.float32)
        dones = np.zeros((steps, envs), dtype=np.float32)
        valid = np.zeros((steps, envs), dtype=bool)
        sampler = NumpySampler.build(policy, self.sample_rng) if self.manual is not None else None
        observation_stats = PooledRunningStats(policy.normalizer.stats, self) if config.normalize_observation else None
        reward_stats = PooledRunningStats(self.reward_scaler.stats, self) if config.normalize_reward else None
        for t in range(steps):
            obs_buffer[t] = collector.obs
            if observation_stats is not None:
                observation_stats.update(collector.obs[~collector.prev_done])  # final observations were counted on the step before
            if sampler is not None:
                actions[t], log_probs[t], values[t] = sampler.sample(collector.obs)
            else:
                with torch.no_grad():
                    action, log_prob, _, value = policy.action_and_value(torch.as_tensor(collector.obs, device=self.device))
                actions[t], log_probs[t], values[t] = action.cpu().numpy(), log_prob.cpu().numpy(), value.cpu().numpy()
            step = collector.step(clip_to_box(actions[t], self.action_space))
            valid[t] = step.valid
            ended = step.terminated | step.truncated
            rewards[t] = self.reward_scaler.scale(step.rewards, ended, step.valid, reward_stats) if config.normalize_reward else step.rewards
            terminations[t] = step.terminated
            dones[t] = ended
        for pooled in (observation_stats, reward_stats):
            if pooled is not None:
                pooled.finish()
        with torch.no_grad():
            last_value = policy.value(torch.as_tensor(collector.obs, device=self.device)).cpu().numpy()

        # Advantages with GAE; the autoreset dummy steps get advantage 0 and are dropped below.
        advantages, returns = compute_gae(rewards, values, terminations, dones, valid, last_value, config.gamma, config.gae_lambda)

        # Optimisation: several epochs of shuffled minibatches over the valid steps only.
        flat_valid = np.flatnonzero(valid.reshape(-1))
        b_obs = torch.as_tensor(obs_buffer.reshape(steps * envs, *obs_buffer.shape[2:])[flat_valid], device=self.device)
        b_actions = torch.as_tensor(actions.reshape(steps * envs, *action_shape)[flat_valid], device=self.device)
        b_log_probs = torch.as_tensor(log_probs.reshape(-1)[flat_valid], device=self.device)
        b_advantages = torch.as_tensor(advantages.reshape(-1)[flat_valid], device=self.device)
        b_returns = torch.as_tensor(returns.reshape(-1)[flat_valid], device=self.device)
        b_values = torch.as_tensor(values.reshape(-1)[flat_valid], device=self.device)
        count = len(flat_valid)
        stats: list[torch.Tensor] = []  # per minibatch: the loss parts, stacked in PART_NAMES order
        minibatches = min(config.num_minibatches, count)
        distributed = self.distributed()
        for _epoch in range(config.update_epochs):
            # Shuffle once per epoch; each minibatch is then a contiguous slice (a view, no copy).
            order = torch.randperm(count)
            shuffled = [tensor[order] for tensor in (b_obs, b_actions, b_log_probs, b_advantages, b_values, b_returns)]
            for mb_obs, mb_actions, mb_log_probs, mb_advantages, mb_values, mb_returns in zip(*(t.tensor_split(minibatches) for t in shuffled)):
                if config.norm_adv and len(mb_advantages) > 1:
                    mb_advantages = (mb_advantages - mb_advantages.mean()) / (mb_advantages.std() + 1e-8)
                if self.manual is not None:
                    parts = self.manual.loss_and_grad(mb_obs, mb_actions, mb_log_probs, mb_advantages, mb_values, mb_returns)
                else:
                    _, new_log_prob, entropy, new_value = policy.action_and_value(mb_obs, mb_actions)
                    loss, parts = ppo_loss(
                        new_log_prob, mb_log_probs, mb_advantages, new_value, mb_values, mb_returns,
                        entropy, config.clip_coef, config.clip_vloss, config.ent_coef, config.vf_coef,
                    )
                    self.optimizer.zero_grad()
                    loss.backward()
                if distributed:
                    self.average_gradients()
                self.optimizer.clip_grad_norm_(config.max_grad_norm)
                self.optimizer.step()
                stats.append(torch.stack([parts[name] for name in PART_NAMES]))
            if config.target_kl is not None:
                # The ranks stop together on their mean KL, or one would wait for the others' gradients forever.
                (kl_sum,) = self.sum_over_ranks([float(torch.stack(stats[-minibatches:])[:, PART_NAMES.index("approx_kl")].mean())])
                if kl_sum / self.world_size() > config.target_kl:
                    break

        explained_variance = _explained_variance(values.reshape(-1)[flat_valid], returns.reshape(-1)[flat_valid])
        means = torch.stack(stats).mean(dim=0).tolist()
        logs = {f"losses/{name}": value for name, value in zip(PART_NAMES, means)}
        logs["losses/explained_variance"] = explained_variance
        logs["charts/learning_rate"] = self.optimizer.param_groups[0]["lr"]
        return logs


def _explained_variance(predicted: np.ndarray, target: np.ndarray) -> float:
    """1 - Var[target - predicted] / Var[target]; NaN when the target is constant."""
    variance = np.var(target)
    return float("nan") if variance == 0 else float(1 - np.var(target - predicted) / variance)
