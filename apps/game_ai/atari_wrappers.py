"""Atari wrappers that Gymnasium 1.x does not ship: fire on reset, life-loss episode ends, raw-score info.

Gymnasium already provides the rest of the DQN-paper preprocessing: ``AtariPreprocessing`` (no-op
starts, frame skipping with max-pooling, grey-scale, resizing), ``FrameStackObservation``,
``ClipReward`` and ``RecordEpisodeStatistics``. :func:`apps.game_ai.atari.wrap_atari` composes
those with the three wrappers below.
"""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym


def has_fire_action(env: gym.Env) -> bool:
    """Return True when the game's minimal action set uses action 1 for FIRE (Breakout, Pong)."""
    meanings = env.unwrapped.get_action_meanings()
    return len(meanings) >= 3 and meanings[1] == "FIRE"


class FireResetWrapper(gym.Wrapper):
    """Press FIRE at the start of each game, and optionally after each lost life.

    Games such as Breakout wait for FIRE before they launch the ball, so a policy that has not yet
    learned to fire would stall until the time limit. During training, life-loss episode ends make
    every life start with a reset, so firing on reset covers every life. During evaluation there is
    no reset between lives, so ``fire_on_life_loss=True`` keeps the start of each life the same as
    the agent saw in training.

    Rewards earned by the FIRE steps taken inside :meth:`reset` are not returned to the caller
    (they are still counted by a raw-score wrapper placed below this one).
    """

    def __init__(self, env: gym.Env, fire_on_life_loss: bool = False, max_resets: int = 10):
        super().__init__(env)
        if not has_fire_action(env):
            raise ValueError(f"{env.spec.id if env.spec else env}: action 1 is not FIRE; FireResetWrapper does not apply")
        self.fire_on_life_loss = fire_on_life_loss
        self.max_resets = max_resets
        self._lives = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        # A game that ends on the FIRE step itself (for example a frame limit reached during the
        # reset no-ops) is reset again, at most ``max_resets`` times.
        obs, info = self.env.reset(seed=seed, options=options)
        for _ in range(self.max_resets):
            obs, _, terminated, truncated, step_info = self.env.step(1)
            if not (terminated or truncated):
                info = {**info, **step_info}
                break
            obs, info = self.env.reset()
        self._lives = self.env.unwrapped.ale.lives()
        return obs, info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        lives = self.env.unwrapped.ale.lives()
        if self.fire_on_life_loss and lives < self._lives and not (terminated or truncated):
            obs, fire_reward, terminated, truncated, info = self.env.step(1)
            reward = float(reward) + float(fire_reward)
        self._lives = lives
        return obs, reward, terminated, truncated, info


class EpisodicLifeWrapper(gym.Wrapper):
    """End a training episode when a life is lost, and continue the same game on the next reset.

    Only :meth:`reset` after a real game end (``terminated`` or ``truncated`` from the wrapped env)
    resets the emulator. After a life loss it takes one NOOP step instead, so the value target
    treats a lost life as terminal while the game, its score and its frame count carry on. Use it
    for training only: evaluation scores whole games.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self._lives = 0
        self._game_over = True

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._game_over = terminated or truncated
        lives = self.env.unwrapped.ale.lives()
        if 0 < lives < self._lives:
            terminated = True
        self._lives = lives
        return obs, reward, terminated, truncated, info

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        if self._game_over or seed is not None:
            obs, info = self.env.reset(seed=seed, options=options)
        else:
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                # Limitation: a game that ends on this NOOP step is reset at once, so its raw score
                # reaches only this reset's info and not a step's info.
                obs, info = self.env.reset(options=options)
        self._game_over = False
        self._lives = self.env.unwrapped.ale.lives()
        return obs, info


class GameEndInfo(gym.Wrapper):
    """Copy the whole game's raw score from ``info["episode"]`` to ``episode_return`` and ``episode_length``.

    ``RecordEpisodeStatistics`` sits below the life-loss and reward-clipping wrappers, so its
    ``info["episode"]`` appears only when the real game ends and contains the unclipped score of
    all lives. The shared collector logs ``info["episode_return"]`` as ``charts/episodic_return`` in
    place of its own sum of the (clipped, per-life) training rewards. Every reset info carries
    ``reports_game_score``, so the collector marks the env from its first step and never logs a life as a game.
    """

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        return obs, {**info, "reports_game_score": True}

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        episode = info.get("episode")
        if episode is not None:
            info = dict(info)
            info["episode_return"] = float(episode["r"])
            info["episode_length"] = int(episode["l"])
        return obs, reward, terminated, truncated, info
