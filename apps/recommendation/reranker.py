"""RL re-ranker: a policy that scores each candidate, trained in the user simulator.

Two trainers share one policy network:

- REINFORCE with the top-K off-policy correction of Chen et al. 2019, "Top-K Off-Policy Correction
  for a REINFORCE Recommender System" (WSDM). Sessions are logged by a behaviour policy beta (the
  policy as it was when the batch was collected, or a softmax over the base model's scores), and
  the batch is reused for several epochs; each shown item a gets the gradient
  ``min(pi(a|s)/beta(a|s), cap) * lambda_K(s, a) * R * grad log pi(a|s)`` with
  ``lambda_K = K (1 - pi(a|s))^(K-1)``, which accounts for K items being shown at once.
- PPO on the slate's Plackett-Luce log-probability, with ``shared.buffers.compute_gae`` and the
  clipped objective ``shared.agents.ppo.ppo_loss``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from apps.recommendation.simulator import RecommendationSessionEnv, scores_from_order
from shared.agents.ppo import ppo_loss
from shared.buffers import compute_gae

logger = logging.getLogger("scenariolab.apps.recommendation.reranker")


class RerankerSettings(BaseModel):
    """The re-ranking policy and how it is trained."""

    model_config = ConfigDict(extra="forbid")

    algorithm: Literal["reinforce_topk", "ppo"] = "ppo"
    train_both: bool = Field(True, description="Also train the other algorithm and report it as a baseline.")
    hidden_size: int = Field(64, ge=4)
    learning_rate: float = Field(3e-3, gt=0)
    gamma: float = Field(0.9, ge=0, le=1)
    sessions_per_iteration: int = Field(32, ge=1)
    behaviour: Literal["policy", "base"] = Field("policy", description="REINFORCE: who logs the sessions; 'policy' is the policy as it was when the batch was collected, 'base' a softmax over base scores.")
    behaviour_temperature: float = Field(0.3, gt=0, description="REINFORCE with behaviour 'base': beta = softmax(base z-score / temperature).")
    weight_cap: float = Field(10.0, gt=0, description="REINFORCE: cap on the importance weight pi/beta.")
    epochs_per_batch: int = Field(2, ge=1)
    gae_lambda: float = Field(0.95, ge=0, le=1)
    clip_coef: float = Field(0.2, gt=0)
    ent_coef: float = Field(0.0, ge=0)
    vf_coef: float = Field(0.5, ge=0)


class RerankPolicy(nn.Module):
    """Score each candidate from the user state, its text embedding, its base score and its position.

    ``logit = base_weight * base_z + shown_weight * log(1 + times shown) + g(user state, item
    embedding, base_z, position, times shown)`` with ``g`` an MLP whose last layer starts at zero, so
    the untrained policy ranks like the base model and training learns the correction. A value head on the user state serves PPO.
    """

    def __init__(self, embedding_dim: int, hidden: int = 64):
        super().__init__()
        self.user = nn.Linear(embedding_dim, hidden)
        self.item = nn.Linear(embedding_dim, hidden)
        self.score = nn.Sequential(nn.Linear(3 * hidden + 3, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.score[-1].weight)
        nn.init.zeros_(self.score[-1].bias)
        self.base_weight = nn.Parameter(torch.tensor(2.0))
        self.shown_weight = nn.Parameter(torch.tensor(0.0))
        self.value = nn.Sequential(nn.Linear(hidden + 2, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, obs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Return candidate logits (B, N) and state values (B,) for a batch of observations."""
        mask = obs["history_mask"].unsqueeze(-1)
        history = (obs["history"] * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        user = torch.tanh(self.user(history))
        items = torch.tanh(self.item(obs["candidates"]))
        count = obs["candidates"].shape[1]
        base = obs["base_scores"]
        position = torch.linspace(0.0, 1.0, count, device=base.device).expand_as(base)
        shown = obs["shown_count"]
        user_rows = user.unsqueeze(1).expand_as(items)
        features = torch.cat([user_rows, items, user_rows * items, base.unsqueeze(-1), position.unsqueeze(-1), torch.log1p(shown).unsqueeze(-1)], dim=-1)
        logits = self.base_weight * base + self.shown_weight * torch.log1p(shown) + self.score(features).squeeze(-1)
        value = self.value(torch.cat([user, torch.log1p(shown).mean(1, keepdim=True), (shown > 0).float().mean(1, keepdim=True)], dim=-1)).squeeze(-1)
        return logits, value


def to_tensors(observations: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """Stack a list of observation dicts into batched float tensors."""
    return {key: torch.from_numpy(np.stack([obs[key] for obs in observations])).float() for key in observations[0]}


def plackett_luce_log_prob(logits: torch.Tensor, slates: torch.Tensor) -> torch.Tensor:
    """Return log P(slate) of an ordered slate (B, K) drawn without replacement from softmax(logits) (B, N)."""
    remaining = logits.clone()
    total = torch.zeros(logits.shape[0], device=logits.device)
    for slot in range(slates.shape[1]):
        chosen = slates[:, slot]
        total = total + remaining.gather(1, chosen.unsqueeze(1)).squeeze(1) - torch.logsumexp(remaining, dim=1)
        remaining = remaining.scatter(1, chosen.unsqueeze(1), -torch.inf)
    return total


def sample_slate(logits: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Sample an ordered slate from the Plackett-Luce model with the Gumbel top-k trick."""
    perturbed = logits + rng.gumbel(size=logits.shape)
    return np.argsort(-perturbed, kind="stable")[:size]


class Reranker:
    """A trained policy behind one method: score a request's candidates, best first."""

    def __init__(self, policy: RerankPolicy):
        self.policy = policy.eval()

    @torch.no_grad()
    def scores(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        logits, _ = self.policy(to_tensors([obs]))
        return logits[0].numpy()

    def action(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """Return env action scores in [-1, 1] that rank the candidates by the policy's logits."""
        logits = self.scores(obs)
        return scores_from_order(np.argsort(-logits, kind="stable"), len(logits))


@dataclass
class TrainResult:
    """A trained policy and its training curve (one row per iteration)."""

    policy: RerankPolicy
    history: list[dict[str, float]]
    seconds: float


def _discounted(rewards: list[float], gamma: float) -> np.ndarray:
    returns = np.zeros(len(rewards), dtype=np.float32)
    running = 0.0
    for t in reversed(range(len(rewards))):
        running = rewards[t] + gamma * running
        returns[t] = running
    return returns


def train_reinforce_topk(make_env: Callable[[], RecommendationSessionEnv], settings: RerankerSettings, total_steps: int, seed: int, log: Callable[[int, dict[str, float]], None] | None = None) -> TrainResult:
    """Train with off-policy REINFORCE and the top-K correction on sessions logged by beta."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    env = make_env()
    dim = env.observation_space["candidates"].shape[1]
    slate_size = env.settings.slate_size
    policy = RerankPolicy(dim, settings.hidden_size)
    optimizer = torch.optim.Adam(policy.parameters(), lr=settings.learning_rate)
    steps = 0
    episode = 0
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    while steps < total_steps:
        observations: list[dict[str, np.ndarray]] = []
        slates: list[np.ndarray] = []
        behaviour: list[np.ndarray] = []
        returns: list[np.ndarray] = []
        session_returns = []
        for _ in range(settings.sessions_per_iteration):
            obs, _ = env.reset(seed=int(rng.integers(2**31)))
            rewards: list[float] = []
            slot_clicks: list[np.ndarray] = []
            done = False
            while not done:
                if settings.behaviour == "base":
                    beta_logits = obs["base_scores"] / settings.behaviour_temperature
                else:
                    with torch.no_grad():
                        beta_logits = policy(to_tensors([obs]))[0][0].numpy().astype(np.float64)
                slate = sample_slate(beta_logits, slate_size, rng)
                beta = np.exp(beta_logits - beta_logits.max())
                beta /= beta.sum()
                observations.append(obs)
                slates.append(slate)
                behaviour.append(beta[slate])
                obs, reward, terminated, truncated, info = env.step(scores_from_order(np.concatenate([slate, np.setdiff1d(np.arange(len(beta_logits)), slate)]), len(beta_logits)))
                rewards.append(float(reward))
                slot_clicks.append(info["clicks"].astype(np.float32))
                done = terminated or truncated
                steps += 1
            # Each shown item's return: its own click (plus its share of any diversity reward) now,
            # and the discounted return of the rest of the session.
            session = _discounted(rewards, settings.gamma)
            future = np.append(session[1:], 0.0)
            clicks = np.stack(slot_clicks)
            extra = (np.asarray(rewards) - clicks.sum(1)) / slate_size
            returns.append(clicks + extra[:, None] + settings.gamma * future[:, None])
            session_returns.append(sum(rewards))
            episode += 1
        batch = to_tensors(observations)
        slate_t = torch.from_numpy(np.stack(slates))
        beta_t = torch.from_numpy(np.stack(behaviour)).float()
        return_t = torch.from_numpy(np.concatenate(returns)).float()
        # Baseline per slot: position bias makes a click in slot 0 more likely than in slot 9, so
        # each item is compared with other items shown in the same slot.
        advantage = return_t - return_t.mean(0, keepdim=True)
        advantage = advantage / (advantage.std() + 1e-6)
        for _ in range(settings.epochs_per_batch):
            logits, _ = policy(batch)
            log_pi = torch.log_softmax(logits, dim=1).gather(1, slate_t)
            pi = log_pi.exp().detach()
            weight = torch.clamp(pi / beta_t, max=settings.weight_cap)
            lambda_k = slate_size * (1.0 - pi).pow(slate_size - 1)
            loss = -(weight * lambda_k * advantage * log_pi).sum(1).mean()
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            optimizer.step()
        row = {"charts/episodic_return": float(np.mean(session_returns)), "losses/policy_loss": float(loss), "reinforce/importance_weight_mean": float(weight.mean())}
        history.append({"global_step": steps, **row})
        if log is not None:
            log(steps, row)
    env.close()
    return TrainResult(policy.eval(), history, time.perf_counter() - start)


def train_ppo(make_env: Callable[[], RecommendationSessionEnv], settings: RerankerSettings, total_steps: int, seed: int, log: Callable[[int, dict[str, float]], None] | None = None, num_envs: int = 8, rollout_steps: int = 16) -> TrainResult:
    """Train with PPO: the action is a Plackett-Luce slate sampled from the policy's logits."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    envs = [make_env() for _ in range(num_envs)]
    dim = envs[0].observation_space["candidates"].shape[1]
    slate_size = envs[0].settings.slate_size
    policy = RerankPolicy(dim, settings.hidden_size)
    optimizer = torch.optim.Adam(policy.parameters(), lr=settings.learning_rate)
    current = [env.reset(seed=int(rng.integers(2**31)))[0] for env in envs]
    episode_returns = np.zeros(num_envs)
    finished: list[float] = []
    history: list[dict[str, float]] = []
    steps = 0
    start = time.perf_counter()
    while steps < total_steps:
        observations, slates, log_probs, values = [], [], [], []
        rewards = np.zeros((rollout_steps, num_envs), dtype=np.float32)
        terminations = np.zeros((rollout_steps, num_envs), dtype=np.float32)
        dones = np.zeros((rollout_steps, num_envs), dtype=np.float32)
        final_values = np.zeros((rollout_steps, num_envs), dtype=np.float32)
        for t in range(rollout_steps):
            batch = to_tensors(current)
            with torch.no_grad():
                logits, value = policy(batch)
            step_slates = np.stack([sample_slate(row, slate_size, rng) for row in logits.numpy()])
            with torch.no_grad():
                log_prob = plackett_luce_log_prob(logits, torch.from_numpy(step_slates))
            observations.extend(current)
            slates.append(step_slates)
            log_probs.append(log_prob.numpy())
            values.append(value.numpy())
            next_obs = []
            for index, env in enumerate(envs):
                count = logits.shape[1]
                order = np.concatenate([step_slates[index], np.setdiff1d(np.arange(count), step_slates[index])])
                obs, reward, terminated, truncated, _ = env.step(scores_from_order(order, count))
                rewards[t, index] = reward
                episode_returns[index] += reward
                terminations[t, index] = float(terminated)
                dones[t, index] = float(terminated or truncated)
                if terminated or truncated:
                    if truncated and not terminated:
                        with torch.no_grad():
                            final_values[t, index] = float(policy(to_tensors([obs]))[1][0])
                    finished.append(float(episode_returns[index]))
                    episode_returns[index] = 0.0
                    obs, _ = env.reset(seed=int(rng.integers(2**31)))
                next_obs.append(obs)
            current = next_obs
            steps += num_envs
        with torch.no_grad():
            last_value = policy(to_tensors(current))[1].numpy()
        value_array = np.stack(values)
        # A truncated step bootstraps from V(final obs): fold it into the reward so compute_gae,
        # which reads the next row's value, gets the right target after the reset.
        rewards_for_gae = rewards + settings.gamma * final_values
        valid = np.ones_like(rewards, dtype=bool)
        advantages, returns = compute_gae(rewards_for_gae, value_array, np.maximum(terminations, dones), dones, valid, last_value, settings.gamma, settings.gae_lambda)
        batch = to_tensors(observations)
        slate_t = torch.from_numpy(np.concatenate(slates))
        old_log_prob = torch.from_numpy(np.concatenate(log_probs))
        old_values = torch.from_numpy(value_array.reshape(-1))
        advantage_t = torch.from_numpy(advantages.reshape(-1))
        advantage_t = (advantage_t - advantage_t.mean()) / (advantage_t.std() + 1e-8)
        return_t = torch.from_numpy(returns.reshape(-1))
        for _ in range(settings.epochs_per_batch):
            logits, new_values = policy(batch)
            new_log_prob = plackett_luce_log_prob(logits, slate_t)
            entropy = -(torch.softmax(logits, 1) * torch.log_softmax(logits, 1)).sum(1)
            loss, parts = ppo_loss(new_log_prob, old_log_prob, advantage_t, new_values, old_values, return_t, entropy, settings.clip_coef, False, settings.ent_coef, settings.vf_coef)
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(policy.parameters(), 0.5)
            optimizer.step()
        row = {f"losses/{key}": float(value) for key, value in parts.items()}
        if finished:
            row["charts/episodic_return"] = float(np.mean(finished[-50:]))
        history.append({"global_step": steps, **row})
        if log is not None:
            log(steps, row)
    for env in envs:
        env.close()
    return TrainResult(policy.eval(), history, time.perf_counter() - start)


def policy_state(policy: RerankPolicy) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in policy.state_dict().items()}


def load_policy(tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> RerankPolicy:
    """Rebuild a policy from safetensors weights and the metadata written beside them."""
    policy = RerankPolicy(int(metadata["embedding_dim"]), int(metadata["hidden_size"]))
    policy.load_state_dict(tensors)
    return policy.eval()
