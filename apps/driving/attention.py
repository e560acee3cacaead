"""Ego-attention encoder over the rows of a Kinematics observation (one row per vehicle, the ego first).

Architecture of Leurent and Mercat 2019, "Social Attention for Autonomous Decision-Making in Dense
Traffic". A shared MLP embeds every vehicle row. The ego embedding forms the query of a multi-head
attention whose keys and values come from all vehicles, and the attended output plus the ego
embedding is the feature vector. Rows that are all zeros (highway-env's padding for absent or unseen vehicles)
are masked out, so the encoder does not depend on a fixed vehicle order or count.

Agents select it with ``network: ego_attention`` in their config once this module is imported
(``apps.driving`` imports it when it registers its kinds).
"""

from __future__ import annotations

import gymnasium as gym
import torch
from torch import nn

from shared.networks import layer_init, register_encoder


class EgoAttentionEncoder(nn.Module):
    """Map ``(N, vehicles, features)`` observations to ``(N, embed_dim)`` features by ego attention."""

    def __init__(self, vehicles: int, features: int, embed_dim: int = 64, heads: int = 2):
        super().__init__()
        if embed_dim % heads:
            raise ValueError(f"embed_dim {embed_dim} must be divisible by heads {heads}")
        self.vehicles = vehicles
        self.features_per_vehicle = features
        self.features_dim = embed_dim
        self.embedding = nn.Sequential(
            layer_init(nn.Linear(features, embed_dim)),
            nn.ReLU(),
            layer_init(nn.Linear(embed_dim, embed_dim)),
            nn.ReLU(),
        )
        self.attention = nn.MultiheadAttention(embed_dim, heads, batch_first=True)
        self.output = nn.Sequential(layer_init(nn.Linear(embed_dim, embed_dim)), nn.ReLU())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.float().reshape(obs.shape[0], self.vehicles, self.features_per_vehicle)
        absent = x.abs().sum(dim=-1) == 0
        absent[:, 0] = False  # The ego row is never masked, so the key set is never empty.
        embedded = self.embedding(x)
        ego = embedded[:, :1]
        attended, _ = self.attention(ego, embedded, embedded, key_padding_mask=absent, need_weights=False)
        return self.output(attended.squeeze(1) + ego.squeeze(1))

    def attention_weights(self, obs: torch.Tensor) -> torch.Tensor:
        """Return the ego query's attention over vehicles, ``(N, vehicles)``, averaged over heads (for display)."""
        x = obs.float().reshape(obs.shape[0], self.vehicles, self.features_per_vehicle)
        absent = x.abs().sum(dim=-1) == 0
        absent[:, 0] = False
        embedded = self.embedding(x)
        _, weights = self.attention(embedded[:, :1], embedded, embedded, key_padding_mask=absent, need_weights=True)
        return weights.squeeze(1)


def ego_attention_factory(space: gym.spaces.Box) -> EgoAttentionEncoder:
    """Build the encoder for a ``(vehicles, features)`` Box, the shape of highway-env's Kinematics observation."""
    if len(space.shape) != 2:
        raise ValueError(f"ego_attention needs a (vehicles, features) observation, got shape {space.shape}")
    vehicles, features = space.shape
    return EgoAttentionEncoder(int(vehicles), int(features))


register_encoder("ego_attention", ego_attention_factory)
