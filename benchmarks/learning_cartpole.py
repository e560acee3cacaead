"""PPO learning on CartPole-v1 over 5 seeds at 100k steps: mean final evaluation return with a 95% CI.

Target: mean evaluation return >= 475 (CartPole-v1's "solved" threshold).
The peer is Stable-Baselines3's PPO with the same settings, trained on the same seeds.
Run: `.venv/bin/python benchmarks/learning_cartpole.py [--seeds N] [--steps N] [--no-peer]`.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

import numpy as np
import torch

from shared.kinds import RunOptions
from shared.registry import get_kind
from shared.rundir import RunDir
from shared.scenario import load_scenario
from shared.stats import bootstrap_ci


def scenariolab_return(seed: int, steps: int) -> float:
    loaded = load_scenario("scenarios/classic/cartpole_ppo.yaml", [f"budget.full={steps}", "logging.tensorboard=false"])
    kind = get_kind("gym")
    with tempfile.TemporaryDirectory() as folder:
        run_dir = RunDir.create(folder, loaded.name, seed)
        summary = kind.run(loaded, run_dir, RunOptions(budget="full", seed=seed, progress=False))
    return float(summary["metrics"]["return_mean"])


def sb3_return(seed: int, steps: int) -> float:
    import gymnasium as gym
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    env = make_vec_env("CartPole-v1", n_envs=8, seed=seed)
    model = PPO(
        "MlpPolicy", env, n_steps=32, batch_size=64, n_epochs=10, learning_rate=lambda f: 1e-3 * f, gamma=0.98,
        gae_lambda=0.8, ent_coef=0.0, seed=seed, device="cpu", verbose=0,
        policy_kwargs={"net_arch": {"pi": [64, 64], "vf": [64, 64]}, "activation_fn": torch.nn.Tanh},
    )
    model.learn(total_timesteps=steps)
    returns = []
    for eval_seed in (10_000, 10_001, 10_002):
        eval_env = gym.make("CartPole-v1")
        obs, _ = eval_env.reset(seed=eval_seed)
        for episode in range(10):
            if episode:
                obs, _ = eval_env.reset()
            total, done = 0.0, False
            while not done:
                action, _ = model.predict(obs, deterministic=True)
                obs, reward, terminated, truncated, _ = eval_env.step(action)
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
    return float(np.mean(returns))


def describe(name: str, values: list[float]) -> str:
    low, high = bootstrap_ci(values, samples=5000, seed=0)
    return f"| {name} | {statistics.mean(values):.1f} | [{low:.1f}, {high:.1f}] | {', '.join(f'{v:.0f}' for v in values)} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--no-peer", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    ours, peer = [], []
    for seed in range(args.seeds):
        ours.append(scenariolab_return(seed, args.steps))
        print(f"seed {seed}: scenariolab {ours[-1]:.1f}", flush=True)
        if not args.no_peer:
            peer.append(sb3_return(seed, args.steps))
            print(f"seed {seed}: sb3 {peer[-1]:.1f}", flush=True)
    print()
    print("| side | mean return | 95% CI | per seed |")
    print("|---|---|---|---|")
    print(describe("scenariolab", ours))
    if peer:
        print(describe("sb3", peer))
    ratio = statistics.mean(ours) / statistics.mean(peer) if peer else float("nan")
    print(f"learning_cartpole: ratio={ratio:.2f} (ours {statistics.mean(ours):.1f} return, peer {statistics.mean(peer) if peer else float('nan'):.1f} return)")


if __name__ == "__main__":
    main()
