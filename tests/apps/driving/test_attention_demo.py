"""The ego-attention encoder, the demo episode API and a tiny robustness sweep."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from apps.driving.attention import EgoAttentionEncoder, ego_attention_factory
from shared.networks import make_encoder


def test_ego_attention_masks_absent_vehicles():
    torch.manual_seed(0)
    encoder = EgoAttentionEncoder(vehicles=4, features=3, embed_dim=8, heads=2)
    obs = torch.zeros(1, 4, 3)
    obs[0, 0] = torch.tensor([1.0, 0.0, 0.5])
    obs[0, 1] = torch.tensor([1.0, 0.2, 0.1])
    weights = encoder.attention_weights(obs)
    assert weights.shape == (1, 4)
    assert torch.allclose(weights[0, 2:], torch.zeros(2))
    assert abs(weights[0].sum().item() - 1.0) < 1e-5
    # Permuting the other vehicles' rows leaves the features unchanged.
    swapped = obs.clone()
    swapped[0, 1], swapped[0, 3] = obs[0, 3], obs[0, 1]
    assert torch.allclose(encoder(obs), encoder(swapped), atol=1e-6)


def test_ego_attention_registered():
    space = gym.spaces.Box(-np.inf, np.inf, shape=(5, 5), dtype=np.float32)
    encoder = make_encoder("ego_attention", space)
    assert isinstance(encoder, EgoAttentionEncoder)
    assert encoder(torch.zeros(3, 5, 5)).shape == (3, encoder.features_dim)
    assert isinstance(ego_attention_factory(space), EgoAttentionEncoder)


def test_demo_yields_frames_and_panel():
    from apps.driving.demo import play_episode

    steps = list(play_episode("highway", "idm", {"density": 1.5}, seed=3, max_steps=3))
    assert len(steps) == 4
    frame, panel = steps[-1]
    assert frame.ndim == 3
    assert frame.shape[2] == 3
    assert frame.dtype == np.uint8
    assert panel["step"] == 3
    for key in ("speed", "ttc", "cost", "shield_interventions", "episode_cost"):
        assert key in panel
    assert panel["speed"] > 0


def test_robustness_sweep_writes_curves(tmp_path):
    from apps.driving.robustness import idm_agent, random_agent, run_robustness
    from tests.apps.driving.helpers import load

    loaded = load("highway_ppo", "env.config.duration=3", "env.config.vehicles_count=8")
    result = run_robustness(loaded, [idm_agent(), random_agent()], {"density": [0.5, 2.0]}, tmp_path, episodes=1, seeds=[5])
    assert set(result["results"]["density"]) == {"0.5", "2.0"}
    assert set(result["results"]["density"]["2.0"]) == {"idm", "random"}
    assert (tmp_path / "robustness.json").exists()
    assert (tmp_path / "robustness_density_collision_rate.png").exists()
    report = (tmp_path / "robustness.md").read_text()
    assert "| idm |" in report
    assert "| random |" in report


def test_agents_accept_ego_attention():
    from shared.agents.ppo_lagrangian import PPOLagrangian, PPOLagrangianConfig

    space = gym.spaces.Box(-np.inf, np.inf, shape=(5, 5), dtype=np.float32)
    agent = PPOLagrangian(space, gym.spaces.Discrete(5), PPOLagrangianConfig(network="ego_attention"), num_envs=1)
    assert isinstance(agent.policy.encoder, EgoAttentionEncoder)
    assert isinstance(agent.cost_critic.encoder, EgoAttentionEncoder)
    actions = agent.act(np.zeros((2, 5, 5), dtype=np.float32), deterministic=True)
    assert actions.shape == (2,)
