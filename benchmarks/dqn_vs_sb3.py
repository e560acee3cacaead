"""DQN training throughput: ScenarioLab against Stable-Baselines3 on CartPole-v1, same settings.

Target: ScenarioLab's median training steps per second is at least 2x SB3's.
Both sides use the RL Zoo CartPole settings: one env, lr 2.3e-3, batch 64, buffer 100k, learning
starts at 1000, train every 256 steps with 128 gradient steps, target update every 10 steps,
256-256 ReLU network, Huber loss, one torch thread; rounds alternate in one process.
Run: `.venv/bin/python benchmarks/dqn_vs_sb3.py [--steps N] [--rounds R]`.
"""

from __future__ import annotations


from bench_common import compare_with_sb3


def sb3_runner(steps: int):
    from stable_baselines3 import DQN
    from stable_baselines3.common.env_util import make_vec_env

    def run() -> int:
        env = make_vec_env("CartPole-v1", n_envs=1, seed=0)
        model = DQN(
            "MlpPolicy", env, learning_rate=2.3e-3, batch_size=64, buffer_size=100_000, learning_starts=1000, gamma=0.99,
            target_update_interval=10, train_freq=256, gradient_steps=128, exploration_fraction=0.16,
            exploration_final_eps=0.04, policy_kwargs={"net_arch": [256, 256]}, seed=0, device="cpu", verbose=0,
        )
        model.learn(total_timesteps=steps)
        env.close()
        return model.num_timesteps

    return run


def main() -> None:
    compare_with_sb3("dqn_vs_sb3", __doc__.splitlines()[0], "scenarios/classic/cartpole_dqn.yaml", sb3_runner)


if __name__ == "__main__":
    main()
