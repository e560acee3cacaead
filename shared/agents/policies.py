"""Policy and value networks built from an observation encoder and MLP heads."""

from __future__ import annotations

from typing import Sequence

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Normal

from shared.networks import MLP, ObservationNormalizer, layer_init, make_encoder, to_channels_first


class ActorCritic(nn.Module):
    """Actor and critic for discrete (categorical) or continuous (diagonal Gaussian) actions.

    Flat observations get two separate MLPs, as in the reference PPO; image or custom encoders
    (Nature CNN, attention) are shared by both heads to save compute.
    """

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        hidden_sizes: Sequence[int] = (64, 64),
        activation: str = "tanh",
        network: str = "auto",
        normalize_observation: bool = False,
        log_std_init: float = 0.0,
    ):
        super().__init__()
        self.observation_space = observation_space
        self.continuous = isinstance(action_space, gym.spaces.Box)
        action_dim = int(np.prod(action_space.shape)) if self.continuous else int(action_space.n)
        obs_shape = observation_space.shape or ()
        self.normalizer = ObservationNormalizer(obs_shape, enabled=normalize_observation)
        encoder = make_encoder(network, observation_space)
        self.shared_encoder = not type(encoder).__name__ == "Flatten"
        if self.shared_encoder:
            self.encoder = encoder
            features = encoder.features_dim
            self.actor = MLP(features, action_dim, hidden_sizes if network not in ("auto", "nature_cnn") else (), activation, output_std=0.01)
            self.critic = MLP(features, 1, hidden_sizes if network not in ("auto", "nature_cnn") else (), activation, output_std=1.0)
        else:
            self.encoder = encoder
            features = encoder.features_dim
            self.actor = MLP(features, action_dim, hidden_sizes, activation, output_std=0.01)
            self.critic = MLP(features, 1, hidden_sizes, activation, output_std=1.0)
        if self.continuous:
            self.actor_log_std = nn.Parameter(torch.full((1, action_dim), float(log_std_init)))

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        obs = to_channels_first(obs, self.observation_space)
        if obs.dtype != torch.uint8:
            obs = self.normalizer(obs.float())
        return self.encoder(obs)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """Return V(obs) with shape (N,)."""
        return self.critic(self.features(obs)).squeeze(-1)

    def distribution_from_features(self, features: torch.Tensor) -> Distribution:
        output = self.actor(features)
        if self.continuous:
            return Normal(output, self.actor_log_std.expand_as(output).exp())
        return Categorical(logits=output)

    def distribution(self, obs: torch.Tensor) -> Distribution:
        return self.distribution_from_features(self.features(obs))

    def action_and_value(
        self, obs: torch.Tensor, action: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample (or score the given) action; return action, log-probability, entropy and value."""
        features = self.features(obs)
        value = self.critic(features).squeeze(-1)
        if self.continuous:
            dist = self.distribution_from_features(features)
            if action is None:
                action = dist.sample()
            return action, dist.log_prob(action).sum(-1), dist.entropy().sum(-1), value
        # Categorical written out: torch.distributions adds argument checks that dominate the
        # cost of these small networks.
        log_probs = torch.log_softmax(self.actor(features), dim=-1)
        if action is None:
            action = torch.multinomial(log_probs.exp(), 1).squeeze(-1)
        log_prob = log_probs.gather(-1, action.long().unsqueeze(-1)).squeeze(-1)
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        return action, log_prob, entropy, value

    def deterministic_action(self, obs: torch.Tensor) -> torch.Tensor:
        """Return the mode: the mean for Gaussian actions, the arg-max for categorical ones."""
        output = self.actor(self.features(obs))
        return output if self.continuous else output.argmax(-1)


class QNetwork(nn.Module):
    """Action-value network; with ``dueling`` the head splits into V(s) and A(s, a) (Wang et al. 2016)."""

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.spaces.Discrete,
        hidden_sizes: Sequence[int] = (120, 84),
        activation: str = "relu",
        network: str = "auto",
        dueling: bool = False,
    ):
        super().__init__()
        self.observation_space = observation_space
        n_actions = int(action_space.n)
        self.encoder = make_encoder(network, observation_space)
        features = self.encoder.features_dim
        image = type(self.encoder).__name__ != "Flatten"
        hidden = () if image and network in ("auto", "nature_cnn") else tuple(hidden_sizes)
        self.dueling = dueling
        # The Q heads keep PyTorch's default initialisation, as Stable-Baselines3's DQN does. With
        # orthogonal heads, DQN learned CartPole less reliably under the RL Zoo settings.
        if dueling:
            self.value_head = MLP(features, 1, hidden, activation, orthogonal=False)
            self.advantage_head = MLP(features, n_actions, hidden, activation, orthogonal=False)
        else:
            self.head = MLP(features, n_actions, hidden, activation, orthogonal=False)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        obs = to_channels_first(obs, self.observation_space)
        features = self.encoder(obs if obs.dtype == torch.uint8 else obs.float())
        if self.dueling:
            advantage = self.advantage_head(features)
            return self.value_head(features) + advantage - advantage.mean(dim=-1, keepdim=True)
        return self.head(features)


def clip_to_box(actions: np.ndarray, space: gym.Space) -> np.ndarray:
    """Clip sampled Gaussian actions into a Box space's bounds before they reach the env."""
    if isinstance(space, gym.spaces.Box):
        return np.clip(actions, space.low, space.high).astype(space.dtype)
    return actions


def linear_schedule(start: float, end: float, fraction: float) -> float:
    """Interpolate from ``start`` to ``end``; ``fraction`` is clamped to [0, 1]."""
    fraction = min(max(fraction, 0.0), 1.0)
    return start + fraction * (end - start)


__all__ = ["ActorCritic", "QNetwork", "clip_to_box", "linear_schedule"]
