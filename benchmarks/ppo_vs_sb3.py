"""PPO training throughput: ScenarioLab against Stable-Baselines3 on CartPole-v1, same settings.

Target: ScenarioLab's median training steps per second is at least 3x SB3's.
Both sides use 8 envs x 32 steps, minibatches of 64, 10 epochs, separate 64-64 tanh actor and
critic, lr 1e-3, gamma 0.98, GAE lambda 0.8, one torch thread, no TensorBoard; rounds alternate in
one process. Run: `.venv/bin/python benchmarks/ppo_vs_sb3.py [--steps N] [--rounds R]`.
"""

from __future__ import annotations

import argparse
import torch


from bench_common import alternate, print_table, scenariolab_runner


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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = alternate(args.rounds, {"scenariolab": scenariolab_runner("scenarios/classic/cartpole_ppo.yaml", args.steps), "sb3": sb3_runner(args.steps)})
    print_table("ppo_vs_sb3", results, "scenariolab", "sb3")


if __name__ == "__main__":
    main()
