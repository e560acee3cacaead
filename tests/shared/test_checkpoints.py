"""Checkpoint round trips, corruption and mismatch detection; nothing is unpickled."""

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

from shared.agents.dqn import DQN, DQNConfig
from shared.agents.ppo import PPO, PPOConfig
from shared.checkpoints import load_agent, save_agent
from shared.errors import CheckpointError
from shared.rollout import VectorCollector


def make_envs():
    return gym.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync")


def trained_ppo(steps: int = 512) -> PPO:
    envs = make_envs()
    agent = PPO(envs.single_observation_space, envs.single_action_space, PPOConfig(num_steps=128), num_envs=2, total_steps=steps)
    collector = VectorCollector(envs, seed=0)
    while collector.global_step < steps:
        agent.train_iteration(collector)
    return agent


def test_ppo_round_trip(tmp_path):
    agent = trained_ppo()
    save_agent(agent, tmp_path / "ckpt", {"global_step": 512})
    envs = make_envs()
    fresh = PPO(envs.single_observation_space, envs.single_action_space, PPOConfig(num_steps=128), num_envs=2, total_steps=512)
    metadata = load_agent(fresh, tmp_path / "ckpt")
    assert metadata["global_step"] == 512
    for (name, a), (_, b) in zip(agent.policy.state_dict().items(), fresh.policy.state_dict().items()):
        assert torch.equal(a, b), name
    # The optimiser's moments survive too, so a resumed run continues with them.
    saved_state = agent.optimizer.state_dict()["state"]
    loaded_state = fresh.optimizer.state_dict()["state"]
    assert saved_state.keys() == loaded_state.keys()
    for key in saved_state:
        assert torch.equal(saved_state[key]["exp_avg"], loaded_state[key]["exp_avg"])
    assert fresh.iteration == agent.iteration
    obs = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    assert np.array_equal(agent.act(obs, deterministic=True), fresh.act(obs, deterministic=True))


def test_dqn_round_trip_with_replay_buffer(tmp_path):
    envs = make_envs()
    config = DQNConfig(learning_starts=50, batch_size=16, buffer_size=500)
    agent = DQN(envs.single_observation_space, envs.single_action_space, config, num_envs=2, total_steps=400)
    collector = VectorCollector(envs, seed=0)
    while collector.global_step < 300:
        agent.train_iteration(collector)
    save_agent(agent, tmp_path / "dqn")
    fresh = DQN(envs.single_observation_space, envs.single_action_space, config, num_envs=2, total_steps=400)
    load_agent(fresh, tmp_path / "dqn")
    assert len(fresh.buffer) == len(agent.buffer)
    assert np.array_equal(fresh.buffer.obs[: len(agent.buffer)], agent.buffer.obs[: len(agent.buffer)])
    assert fresh.env_steps == agent.env_steps
    assert fresh.buffer.sample(8)["returns"].tolist() == agent.buffer.sample(8)["returns"].tolist()


def test_corrupt_weights_rejected(tmp_path):
    agent = trained_ppo(256)
    stem = save_agent(agent, tmp_path / "ckpt")
    weights = stem.with_suffix(".safetensors")
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt checkpoint"):
        load_agent(agent, stem)


def test_corrupt_metadata_rejected(tmp_path):
    agent = trained_ppo(256)
    stem = save_agent(agent, tmp_path / "ckpt")
    stem.with_suffix(".json").write_text("{ not json", encoding="utf-8")
    with pytest.raises(CheckpointError, match="corrupt checkpoint metadata"):
        load_agent(agent, stem)


def test_mismatched_agent_rejected(tmp_path):
    agent = trained_ppo(256)
    stem = save_agent(agent, tmp_path / "ckpt")
    envs = make_envs()
    dqn = DQN(envs.single_observation_space, envs.single_action_space, DQNConfig())
    with pytest.raises(CheckpointError, match="checkpoint is for 'ppo'"):
        load_agent(dqn, stem)


def test_mismatched_network_shape_rejected(tmp_path):
    agent = trained_ppo(256)
    stem = save_agent(agent, tmp_path / "ckpt")
    envs = make_envs()
    wider = PPO(envs.single_observation_space, envs.single_action_space, PPOConfig(hidden_sizes=[32, 32]))
    with pytest.raises(CheckpointError, match="do not match"):
        load_agent(wider, stem)


def test_metadata_is_plain_json(tmp_path):
    agent = trained_ppo(256)
    stem = save_agent(agent, tmp_path / "ckpt")
    document = json.loads(stem.with_suffix(".json").read_text())
    assert document["format"] == "scenariolab-checkpoint"
    assert document["agent"] == "ppo"
    assert len(document["sha256"]) == 64
