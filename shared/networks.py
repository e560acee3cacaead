"""Networks shared by the agents: MLP, the Nature CNN, observation encoders and running normalisers.

Orthogonal initialisation with gain sqrt(2) for hidden layers, 0.01 for policy logits and 1 for the
value head follows the PPO implementation details catalogued by Huang et al. 2022 ("The 37
Implementation Details of Proximal Policy Optimization"); PPO and A2C rely on it.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import gymnasium as gym
import numpy as np
import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU}
ACTIVATION_FUNCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "tanh": torch.tanh,
    "relu": torch.relu,
    "elu": torch.nn.functional.elu,
    "gelu": torch.nn.functional.gelu,
}


def layer_init(layer: nn.Module, std: float = math.sqrt(2), bias: float = 0.0) -> nn.Module:
    """Initialise a linear or convolutional layer orthogonally with gain ``std`` and a constant bias."""
    nn.init.orthogonal_(layer.weight, std)  # type: ignore[arg-type]
    nn.init.constant_(layer.bias, bias)  # type: ignore[arg-type]
    return layer


class MLP(nn.Module):
    """A fully connected network ``in_dim -> hidden_sizes -> out_dim``.

    With ``orthogonal``, the policy-gradient convention, layers get orthogonal weights with gain
    sqrt(2) and ``output_std`` on the last layer. Without it they keep PyTorch's default
    initialisation, as Stable-Baselines3's DQN does.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_sizes: Sequence[int] = (64, 64),
        activation: str = "tanh",
        output_std: float = 1.0,
        orthogonal: bool = True,
    ):
        super().__init__()
        init = layer_init if orthogonal else (lambda layer, std=1.0: layer)
        layers: list[nn.Module] = []
        previous = in_dim
        for size in hidden_sizes:
            layers += [init(nn.Linear(previous, size)), ACTIVATIONS[activation]()]
            previous = size
        layers.append(init(nn.Linear(previous, out_dim), std=output_std))
        self.net = nn.Sequential(*layers)
        self.linears: list[nn.Linear] = [layer for layer in layers if isinstance(layer, nn.Linear)]
        self.activation_name = activation
        self.activation = ACTIVATION_FUNCTIONS[activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The layers of ``self.net`` applied as functions: on classic-control sizes the module-call
        # machinery of nn.Sequential costs more than the matrix products.
        *hidden, output = self.linears
        for layer in hidden:
            x = self.activation(torch.nn.functional.linear(x, layer.weight, layer.bias))
        return torch.nn.functional.linear(x, output.weight, output.bias)


class NatureCNN(nn.Module):
    """The convolutional torso of Mnih et al. 2015 (Nature DQN): 84x84 frames to ``features_dim`` features.

    Input is uint8 ``(N, C, 84, 84)`` with the oldest stacked frame first; it is scaled to [0, 1] here.
    """

    def __init__(self, in_channels: int, features_dim: int = 512, height: int = 84, width: int = 84):
        super().__init__()
        self.conv = nn.Sequential(
            layer_init(nn.Conv2d(in_channels, 32, 8, stride=4)),
            nn.ReLU(),
            layer_init(nn.Conv2d(32, 64, 4, stride=2)),
            nn.ReLU(),
            layer_init(nn.Conv2d(64, 64, 3, stride=1)),
            nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.conv(torch.zeros(1, in_channels, height, width)).shape[1]
        self.fc = nn.Sequential(layer_init(nn.Linear(flat, features_dim)), nn.ReLU())
        self.features_dim = features_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x.float() / 255.0))


class Flatten(nn.Module):
    """Encoder for flat observations: reshape each observation to a vector and cast to float."""

    def __init__(self, features_dim: int):
        super().__init__()
        self.features_dim = features_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1).float()


EncoderFactory = Callable[[gym.spaces.Box], nn.Module]
_ENCODERS: dict[str, EncoderFactory] = {}


def register_encoder(name: str, factory: EncoderFactory) -> None:
    """Register an observation encoder that agents select with ``network: NAME``.

    ``factory(observation_space)`` returns a module with a ``features_dim`` attribute that maps a
    batch of observations to ``(N, features_dim)`` features.
    """
    _ENCODERS[name] = factory


def encoder_names() -> list[str]:
    return ["auto", *sorted(_ENCODERS)]


def is_image_space(space: gym.Space) -> bool:
    """True for uint8 Box spaces with three dimensions (stacked frames or RGB images)."""
    return isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3


def _nature_cnn(space: gym.spaces.Box) -> nn.Module:
    channels, height, width = space.shape
    if space.shape[-1] < space.shape[0]:  # channels-last images are transposed by the agent's preprocessing
        height, width, channels = space.shape
    return NatureCNN(channels, 512, height, width)


register_encoder("flatten", lambda space: Flatten(int(np.prod(space.shape))))
register_encoder("nature_cnn", _nature_cnn)


def make_encoder(name: str, space: gym.Space) -> nn.Module:
    """Build the named encoder for ``space``; ``auto`` picks the Nature CNN for images, else flatten."""
    if name == "auto":
        name = "nature_cnn" if is_image_space(space) else "flatten"
    if name not in _ENCODERS:
        raise ValueError(f"unknown network {name!r}; registered: {', '.join(encoder_names())}")
    return _ENCODERS[name](space)  # type: ignore[arg-type]


def to_channels_first(obs: torch.Tensor, space: gym.Space) -> torch.Tensor:
    """Move a channels-last image batch ``(N, H, W, C)`` to ``(N, C, H, W)``; other batches pass through."""
    if is_image_space(space) and space.shape[-1] < space.shape[0]:
        return obs.permute(0, 3, 1, 2)
    return obs


class RunningMeanStd(nn.Module):
    """Running mean and variance (parallel algorithm of Chan et al.), stored as buffers so checkpoints keep them."""

    def __init__(self, shape: Sequence[int] = (), epsilon: float = 1e-4):
        super().__init__()
        self.register_buffer("mean", torch.zeros(tuple(shape), dtype=torch.float64))
        self.register_buffer("var", torch.ones(tuple(shape), dtype=torch.float64))
        self.register_buffer("count", torch.tensor(epsilon, dtype=torch.float64))

    def update(self, batch: np.ndarray) -> None:
        """Fold a batch (first axis = samples) into the statistics; an empty batch changes nothing."""
        if len(batch) == 0:
            return
        batch_t = torch.as_tensor(batch, dtype=torch.float64)
        self.update_from_moments(batch_t.mean(dim=0), batch_t.var(dim=0, unbiased=False), batch_t.shape[0])

    def update_from_moments(self, batch_mean: torch.Tensor, batch_var: torch.Tensor, batch_count: float) -> None:
        """Fold a batch given by its mean, population variance and size into the statistics."""
        delta = batch_mean - self.mean
        total = self.count + batch_count
        new_mean = self.mean + delta * batch_count / total
        m2 = self.var * self.count + batch_var * batch_count + delta.pow(2) * self.count * batch_count / total
        self.mean.copy_(new_mean)
        self.var.copy_(m2 / total)
        self.count.copy_(total)


class ObservationNormalizer(nn.Module):
    """Normalise observations by running statistics and clip them to ``[-clip, clip]``."""

    def __init__(self, shape: Sequence[int], clip: float = 10.0, enabled: bool = True):
        super().__init__()
        self.stats = RunningMeanStd(shape)
        self.clip = clip
        self.enabled = enabled

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return obs
        mean = self.stats.mean.to(obs.dtype)
        std = torch.sqrt(self.stats.var.to(obs.dtype) + 1e-8)
        return torch.clamp((obs - mean) / std, -self.clip, self.clip)
