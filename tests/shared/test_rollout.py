"""The collector's handling of Gymnasium's next-step autoreset on real SyncVectorEnvs."""

import numpy as np

from shared.buffers import ReplayBuffer
from shared.rollout import VectorCollector
from tests.shared.envs import counting_vector_env


def test_dummy_step_is_masked():
    envs = counting_vector_env(1, [2])
    collector = VectorCollector(envs, seed=0)
    valid, rewards, dones = [], [], []
    for _ in range(6):
        step = collector.step(np.zeros(1, dtype=np.int64))
        valid.append(bool(step.valid[0]))
        rewards.append(float(step.rewards[0]))
        dones.append(bool(step.terminated[0]))
    # Episode of 2 steps, then the dummy reset step, repeated.
    assert valid == [True, True, False, True, True, False]
    assert dones == [False, True, False, False, True, False]
    assert rewards[2] == 0.0
    # global_step counts real environment steps only.
    assert collector.global_step == 4


def test_final_observation_on_ending_step():
    envs = counting_vector_env(1, [3], terminate=False)
    collector = VectorCollector(envs, seed=0)
    steps = [collector.step(np.zeros(1, dtype=np.int64)) for _ in range(4)]
    # The truncating step returns the final observation (step index 3), which the truncation
    # bootstraps from; the dummy step then returns the reset observation 0.
    assert steps[2].truncated[0]
    assert steps[2].next_obs[0, 0] == 3.0
    assert steps[3].next_obs[0, 0] == 0.0
    assert not steps[3].valid[0]


def test_four_envs_ending_together_all_recorded():
    envs = counting_vector_env(4, [3, 3, 3, 3])
    collector = VectorCollector(envs, seed=0)
    for _ in range(3):
        collector.step(np.zeros(4, dtype=np.int64))
    episodes = collector.pop_episodes()
    assert len(episodes) == 4
    assert [e.episode_return for e in episodes] == [3.0, 3.0, 3.0, 3.0]
    assert [e.length for e in episodes] == [3, 3, 3, 3]
    assert all(e.global_step == 12 for e in episodes)
    # The following dummy step adds no episode and no steps.
    collector.step(np.zeros(4, dtype=np.int64))
    assert collector.pop_episodes() == []
    assert collector.global_step == 12


def test_replay_buffer_skips_dummy_transitions():
    envs = counting_vector_env(2, [2, 3])
    collector = VectorCollector(envs, seed=0)
    buffer = ReplayBuffer(100, (1,), np.float32, (), np.int64, num_envs=2, gamma=0.5)
    for _ in range(7):
        step = collector.step(np.zeros(2, dtype=np.int64))
        buffer.add(step.obs, step.actions, step.rewards, step.next_obs, step.terminated, step.truncated, step.valid)
    # Env 0 (length 2): steps valid at t = 0,1,3,4,6 -> 5 transitions; env 1 (length 3): t = 0,1,2,4,5,6 -> 6.
    assert len(buffer) == 11
    # No stored transition starts from a final observation paired with the reset observation.
    starts = buffer.obs[: len(buffer), 0]
    ends = buffer.next_obs[: len(buffer), 0]
    assert np.all(ends == starts + 1)


def test_n_step_returns_hand_computed():
    envs = counting_vector_env(1, [3], terminate=True)
    collector = VectorCollector(envs, seed=0)
    buffer = ReplayBuffer(100, (1,), np.float32, (), np.int64, num_envs=1, gamma=0.5, n_step=2)
    for _ in range(3):
        step = collector.step(np.zeros(1, dtype=np.int64))
        buffer.add(step.obs, step.actions, step.rewards, step.next_obs, step.terminated, step.truncated, step.valid)
    # Transitions from obs 0, 1, 2 in order of emission: obs 0 -> 2-step return 1 + 0.5 = 1.5,
    # bootstrap gamma^2 = 0.25 from obs 2; then the termination flushes obs 1 (1.5, no bootstrap)
    # and obs 2 (1.0, no bootstrap).
    assert len(buffer) == 3
    assert buffer.obs[:3, 0].tolist() == [0.0, 1.0, 2.0]
    assert buffer.returns[:3].tolist() == [1.5, 1.5, 1.0]
    assert buffer.discounts[:3].tolist() == [0.25, 0.0, 0.0]
    assert buffer.next_obs[:3, 0].tolist() == [2.0, 3.0, 3.0]


def test_n_step_truncation_keeps_bootstrap():
    envs = counting_vector_env(1, [2], terminate=False)
    collector = VectorCollector(envs, seed=0)
    buffer = ReplayBuffer(100, (1,), np.float32, (), np.int64, num_envs=1, gamma=0.5, n_step=3)
    for _ in range(2):
        step = collector.step(np.zeros(1, dtype=np.int64))
        buffer.add(step.obs, step.actions, step.rewards, step.next_obs, step.terminated, step.truncated, step.valid)
    # Truncated after 2 steps: obs 0 -> 1 + 0.5 = 1.5 with bootstrap 0.25 from the final obs 2;
    # obs 1 -> 1 with bootstrap 0.5.
    assert buffer.returns[:2].tolist() == [1.5, 1.0]
    assert buffer.discounts[:2].tolist() == [0.25, 0.5]


def test_running_statistics_ignore_empty_batches():
    from shared.networks import RunningMeanStd

    stats = RunningMeanStd((2,))
    stats.update(np.array([[1.0, 2.0], [3.0, 4.0]]))
    stats.update(np.zeros((0, 2)))
    assert np.allclose(stats.mean.numpy(), [2.0, 3.0], atol=1e-3)
    assert np.all(np.isfinite(stats.var.numpy()))
