"""PPO training throughput: ScenarioLab against Stable-Baselines3 on CartPole-v1, same settings.

Target: ScenarioLab's median training steps per second is at least 3x SB3's.
Both sides use 8 envs x 32 steps, minibatches of 64, 10 epochs, separate 64-64 tanh actor and
critic, lr 1e-3, gamma 0.98, GAE lambda 0.8, one torch thread, no TensorBoard; rounds alternate in
one process. Run: `.venv/bin/python benchmarks/ppo_vs_sb3.py [--steps N] [--rounds R]`.
"""

from __future__ import annotations

import torch


from bench_common import compare_with_sb3


def sb3_runner(steps: int):
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    def run() -> int:
        env = make_vec_env("CartPole-v1", n_envs=8, seed=0)
        model = PPO(
            "MlpPolicy", env, n_steps=32, batch_size=64, n_epochs=10, learning_rate=1e-3, gamma=0.98, gae_lambda=0.8,
            ent_coef=0.0, clip_range=0.2, vf_coef=0.5, max_grad_norm=0.5, seed=0, device="cpu", verbose=0,
            policy_kwargs={"net_arch": {"pi": [64, 64], "vf": [64, 64]}, "activation_fn": torch.nn.Tanh},
        )
        model.learn(total_timesteps=steps)
        env.close()
        return model.num_timesteps

    return run


def main() -> None:
    compare_with_sb3("ppo_vs_sb3", __doc__.splitlines()[0], "scenarios/classic/cartpole_ppo.yaml", sb3_runner)


if __name__ == "__main__":
    main()
