"""The hand-derived PPO and DQN gradients match autograd's on the same losses, and NumPy acting matches torch."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from shared.agents.policies import ActorCritic, QNetwork
from shared.agents.ppo import ppo_loss
import torch.nn.functional as F

from shared.agents.manual_gradients import (
    LossSettings,
    MLPDQNGradients,
    MLPPPOGradients,
    NumpyGreedy,
    NumpySampler,
    _SeparateTowers,
    _TwinTowers,
    supports,
    supports_q_network,
    twin_parameter_order,
)
from shared.optim import FlatAdam

CASES = [
    # (continuous, activation, hidden, clip_vloss, ent_coef, normalize_observation)
    (False, "tanh", [64, 64], True, 0.0, False),
    (False, "tanh", [32], False, 0.01, False),
    (False, "relu", [16, 16, 16], True, 0.05, True),
    (False, "elu", [24, 8], True, 0.0, False),
    (True, "tanh", [64, 64], True, 0.0, False),
    (True, "relu", [32, 32], False, 0.01, True),
]


def _policy(continuous: bool, activation: str, hidden: list[int], normalize: bool) -> ActorCritic:
    observation_space = gym.spaces.Box(-5, 5, (6,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (3,), np.float32) if continuous else gym.spaces.Discrete(4)
    policy = ActorCritic(observation_space, action_space, hidden, activation, "auto", normalize, log_std_init=-0.3)
    if normalize:
        policy.normalizer.stats.update(torch.randn(50, 6, dtype=torch.float64) * 2 + 1)
    return policy


def _batch(policy: ActorCritic, count: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    obs = torch.randn(count, 6, generator=generator) * 2
    with torch.no_grad():
        actions, log_probs, _, values = policy.action_and_value(obs)
    # Old log-probabilities and values away from the current ones, so that both clip branches occur.
    return {
        "obs": obs,
        "actions": actions,
        "old_log_probs": log_probs + 0.4 * torch.randn(count, generator=generator),
        "advantages": torch.randn(count, generator=generator),
        "old_values": values + 0.5 * torch.randn(count, generator=generator),
        "returns": torch.randn(count, generator=generator),
    }


@pytest.mark.parametrize("twin", [True, False], ids=["twin", "separate"])
@pytest.mark.parametrize("continuous,activation,hidden,clip_vloss,ent_coef,normalize", CASES)
def test_gradients_and_loss_parts_match_autograd(continuous, activation, hidden, clip_vloss, ent_coef, normalize, twin):
    torch.manual_seed(0)
    policy = _policy(continuous, activation, hidden, normalize)
    assert supports(policy)
    batch = _batch(policy, 64, torch.Generator().manual_seed(1))
    settings = LossSettings(clip_coef=0.2, clip_vloss=clip_vloss, ent_coef=ent_coef, vf_coef=0.5)

    _, new_log_probs, entropy, new_values = policy.action_and_value(batch["obs"], batch["actions"])
    loss, expected_parts = ppo_loss(
        new_log_probs, batch["old_log_probs"], batch["advantages"], new_values, batch["old_values"], batch["returns"],
        entropy, settings.clip_coef, settings.clip_vloss, settings.ent_coef, settings.vf_coef,
    )
    policy.zero_grad()
    loss.backward()
    expected = {name: p.grad.clone() for name, p in policy.named_parameters()}
    assert expected_parts["clipfrac"] > 0.1  # the clipped branches are exercised

    # The twin layout needs the optimiser's flat buffer in twin order; the natural order gives separate towers.
    FlatAdam(twin_parameter_order(policy) if twin else list(policy.parameters()), lr=1e-3)
    gradients = MLPPPOGradients(policy, settings)
    assert isinstance(gradients.towers, _TwinTowers if twin else _SeparateTowers)
    parts = gradients.loss_and_grad(**batch)
    for key, value in expected_parts.items():
        torch.testing.assert_close(parts[key], value, rtol=1e-5, atol=1e-6, msg=key)
    for name, parameter in policy.named_parameters():
        torch.testing.assert_close(parameter.grad, expected[name], rtol=1e-4, atol=1e-6, msg=name)


def test_gradients_replace_what_was_there():
    policy = _policy(False, "tanh", [8], False)
    batch = _batch(policy, 16, torch.Generator().manual_seed(2))
    gradients = MLPPPOGradients(policy, LossSettings(0.2, True, 0.0, 0.5))
    gradients.loss_and_grad(**batch)
    first = {name: p.grad.clone() for name, p in policy.named_parameters()}
    gradients.loss_and_grad(**batch)
    for name, parameter in policy.named_parameters():
        assert torch.equal(parameter.grad, first[name]), name


def test_image_and_gelu_policies_use_autograd():
    box = gym.spaces.Box(-1, 1, (4,), np.float32)
    assert not supports(ActorCritic(box, gym.spaces.Discrete(2), [8], "gelu"))
    image = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    assert not supports(ActorCritic(image, gym.spaces.Discrete(2), [8], "tanh"))


@pytest.mark.parametrize("loss", ["huber", "mse"])
@pytest.mark.parametrize("activation,hidden", [("relu", [64, 64]), ("tanh", [32])])
def test_dqn_gradients_match_autograd(loss, activation, hidden):
    torch.manual_seed(3)
    box = gym.spaces.Box(-5, 5, (4,), np.float32)
    q_network = QNetwork(box, gym.spaces.Discrete(3), hidden, activation)
    assert supports_q_network(q_network)
    generator = torch.Generator().manual_seed(4)
    obs = torch.randn(64, 4, generator=generator) * 2
    actions = torch.randint(0, 3, (64,), generator=generator)
    with torch.no_grad():
        # Targets spread so that the Huber loss has errors on both sides of 1.
        target = q_network(obs).gather(1, actions.unsqueeze(1)).squeeze(1) + 3 * torch.randn(64, generator=generator)

    q = q_network(obs).gather(1, actions.unsqueeze(1)).squeeze(1)
    expected_loss = F.smooth_l1_loss(q, target) if loss == "huber" else F.mse_loss(q, target)
    q_network.zero_grad()
    expected_loss.backward()
    expected = {name: p.grad.clone() for name, p in q_network.named_parameters()}

    manual_loss, q_mean = MLPDQNGradients(q_network, loss).loss_and_grad(obs, actions, target)
    torch.testing.assert_close(manual_loss, expected_loss.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(q_mean, q.detach().mean(), rtol=1e-5, atol=1e-6)
    for name, parameter in q_network.named_parameters():
        torch.testing.assert_close(parameter.grad, expected[name], rtol=1e-4, atol=1e-6, msg=name)


def test_dueling_q_network_uses_autograd():
    box = gym.spaces.Box(-1, 1, (4,), np.float32)
    assert not supports_q_network(QNetwork(box, gym.spaces.Discrete(2), [8], "relu", dueling=True))


def test_numpy_greedy_matches_torch_argmax():
    torch.manual_seed(5)
    q_network = QNetwork(gym.spaces.Box(-5, 5, (4,), np.float32), gym.spaces.Discrete(3), [64, 64], "relu")
    obs = np.random.default_rng(6).normal(size=(200, 4)).astype(np.float32)
    with torch.no_grad():
        expected = q_network(torch.as_tensor(obs)).argmax(1).numpy()
    np.testing.assert_array_equal(NumpyGreedy.build(q_network)(obs), expected)


@pytest.mark.parametrize("continuous", [False, True], ids=["categorical", "gaussian"])
def test_numpy_sampler_matches_torch_policy(continuous):
    torch.manual_seed(7)
    policy = _policy(continuous, "tanh", [64, 64], False)
    obs = np.random.default_rng(8).normal(size=(500, 6)).astype(np.float32)
    actions, log_probs, values = NumpySampler.build(policy, np.random.default_rng(9)).sample(obs)
    with torch.no_grad():
        _, expected_log_probs, _, expected_values = policy.action_and_value(torch.as_tensor(obs), torch.as_tensor(actions))
        probabilities = policy.distribution(torch.as_tensor(obs))
    np.testing.assert_allclose(log_probs, expected_log_probs.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(values, expected_values.numpy(), rtol=1e-4, atol=1e-5)
    if not continuous:
        # Sampling follows the policy: 20000 draws on one observation match its probabilities (3 sigma is below 0.011).
        repeated = np.repeat(obs[:1], 20000, axis=0)
        draws, _, _ = NumpySampler.build(policy, np.random.default_rng(10)).sample(repeated)
        frequencies = np.bincount(draws, minlength=4) / len(draws)
        np.testing.assert_allclose(frequencies, probabilities.probs[0].numpy(), atol=0.011)
