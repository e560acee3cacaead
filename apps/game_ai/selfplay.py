"""Masked PPO self-play for Connect Four with an opponent pool of past snapshots.

Each update the learner plays ``num_envs`` games for ``rollout_steps`` of its own moves. Every
game gets an opponent when it starts: the current policy itself with probability
``latest_fraction``, else a snapshot sampled uniformly from the pool (snapshots are taken every
``snapshot_interval`` updates), and optionally a scripted player (``heuristic_fraction``,
``random_fraction``). The
learner takes the first seat in half of the games and the second in the other half. From the
learner's view one step is its move followed by the opponent's reply, so a game's reward is +1
when the learner's move wins, -1 when the reply wins and 0 for a draw.

Illegal columns get logit -inf, so neither the learner nor any pool opponent can play one.

Games against pool snapshots and scripted players also update an online Elo table (logged as
``selfplay/elo`` with the random player at 1000). ``checkpoints/latest`` contains the learner's
weights plus the run state: the optimiser, counters, pool snapshots, Elo table, games in progress
and RNG states, so ``--resume`` continues a stopped run exactly where it stopped.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from apps.game_ai.connect_four import (
    COLUMNS,
    GAME_ID,
    RUN_STATE_PREFIX,
    BatchPlayer,
    ConnectFourAgent,
    ConnectFourBatch,
    ConnectFourNet,
    MoveFn,
    PolicyPlayer,
    load_policy,
    make_pettingzoo_env,
    masked_log_probs_and_entropy,
    play_pettingzoo_game,
    save_policy,
)
from apps.game_ai.elo import EloLadder, GameRecord
from apps.game_ai.heuristics import OneStepLookaheadPlayer, RandomPlayer
from shared.agents.ppo import ppo_loss
from shared.buffers import compute_gae
from shared.checkpoints import flatten_state, load_run_checkpoint
from shared.errors import CheckpointError, ScenarioError, located
from shared.kinds import EvalOptions, Perturbation, RunOptions, ScenarioKind
from shared.logging import MetricLogger
from shared.registry import register_kind, unknown_choice
from shared.logging import read_jsonl
from shared.report import plot_curve, write_report
from shared.rundir import metrics_summary
from shared.stats import bootstrap_ci
from shared.training import InterruptFlag, progress_bar, rng_state, seed_everything, set_rng_state

if TYPE_CHECKING:
    from shared.rundir import RunDir
    from shared.scenario import LoadedScenario

logger = logging.getLogger("scenariolab.game_ai.selfplay")

# Opponent codes stored per game; values >= 0 index the snapshot pool.
LATEST = -1
RANDOM = -2
HEURISTIC = -3
# The learner's name in the online Elo table.
LEARNER = "learner"


class SelfPlaySettings(BaseModel):
    """The ``settings:`` of a ``connect_four_selfplay`` scenario: PPO, pool and Elo parameters."""

    model_config = ConfigDict(extra="forbid")

    num_envs: int = Field(64, ge=1, le=4096, description="Games played in parallel by the learner.")
    rollout_steps: int = Field(32, ge=1, description="Learner moves per game per update.")
    learning_rate: float = Field(2.5e-4, gt=0)
    anneal_lr: bool = True
    gamma: float = Field(0.99, gt=0, le=1)
    gae_lambda: float = Field(0.95, ge=0, le=1)
    clip_coef: float = Field(0.2, gt=0)
    ent_coef: float = Field(0.01, ge=0)
    vf_coef: float = Field(0.5, ge=0)
    clip_vloss: bool = True
    update_epochs: int = Field(4, ge=1)
    num_minibatches: int = Field(4, ge=1)
    max_grad_norm: float = Field(0.5, gt=0)
    torso: Literal["mlp", "conv"] = Field("mlp", description="mlp: flattened planes; conv: a 4x4 convolution first.")
    channels: int = Field(64, ge=1, description="Filters of the conv torso.")
    features: Literal["tactical", "tactical_safety", "raw"] = Field(
        "tactical",
        description="tactical: token planes plus playable cells and immediate threats; tactical_safety: also the playable cells that win, block, or lie under a threat; raw: token planes only.",
    )
    mirror_augment: bool = Field(False, description="Also train on the left-right mirror of every rollout position (the rules are symmetric).")
    hidden_sizes: list[int] = Field(default_factory=lambda: [256, 256], min_length=1)
    snapshot_interval: int = Field(10, ge=1, description="Updates between snapshots added to the opponent pool.")
    pool_size: int = Field(20, ge=1, description="Snapshots kept in the pool; the oldest is dropped first.")
    latest_fraction: float = Field(0.5, ge=0, le=1, description="Share of games played against the current policy.")
    heuristic_fraction: float = Field(0.0, ge=0, le=1, description="Share of games against the one-step lookahead player.")
    random_fraction: float = Field(0.0, ge=0, le=1, description="Share of games against the uniform random player.")
    eval_games: int = Field(100, ge=2, description="Games per seat in the quick batched evaluations during training.")
    elo_games_per_pair: int = Field(20, ge=2, description="Games per pair in the final Elo round robin, half in each seat.")
    elo_k_factor: float = Field(16.0, gt=0)
    elo_passes: int = Field(3, ge=1, description="Shuffled passes over the round-robin games when fitting Elo.")
    warm_start: bool = Field(False, description="Start training from checkpoint_path instead of from scratch.")


@dataclass
class MatchResult:
    """Outcomes of a batch of games between two players, from the first player's view."""

    score_first: np.ndarray  # 1 win, 0.5 draw, 0 loss, per game
    plies: np.ndarray


def play_match(first: BatchPlayer, second: BatchPlayer, games: int) -> MatchResult:
    """Play ``games`` games at once with ``first`` in the first seat; return each game's result."""
    board = ConnectFourBatch(games)
    score = np.full(games, np.nan)
    active = np.arange(games)
    players = (first, second)
    while active.size:
        mover = int(board.to_move[active[0]])  # every active game has had the same number of plies
        actions = players[mover].act_batch(board.planes(active), board.legal_mask(active))
        won, draw = board.play(active, actions)
        score[active[won]] = 1.0 if mover == 0 else 0.0
        score[active[draw]] = 0.5
        active = active[~(won | draw)]
    return MatchResult(score_first=score, plies=board.plies.astype(np.int64))


def win_draw_loss(scores: np.ndarray) -> tuple[float, float, float]:
    """Return the win, draw and loss rates of per-game scores (1, 0.5, 0)."""
    return float(np.mean(scores == 1.0)), float(np.mean(scores == 0.5)), float(np.mean(scores == 0.0))


def quick_evaluation(player: BatchPlayer, games_per_seat: int, seed: int) -> dict[str, float]:
    """Win rates of ``player`` against the scripted players in both seats, on the batched board."""
    results: dict[str, float] = {}
    for name, opponent in (("random", RandomPlayer(seed)), ("heuristic", OneStepLookaheadPlayer(seed + 1))):
        as_first = play_match(player, opponent, games_per_seat).score_first
        as_second = 1.0 - play_match(opponent, player, games_per_seat).score_first
        results[f"win_rate_vs_{name}"] = float(np.mean(np.concatenate([as_first, as_second]) == 1.0))
    return results


class SelfPlayTrainer:
    """Self-play state: the learner, its optimiser, the opponent pool and the games in progress."""

    def __init__(self, settings: SelfPlaySettings, total_steps: int, seed: int):
        self.settings = settings
        self.total_steps = max(int(total_steps), 1)
        self.seed = seed
        torch.manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.generator = torch.Generator().manual_seed(seed)
        self.net = ConnectFourNet(tuple(settings.hidden_sizes), settings.torso, settings.channels, settings.features)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=settings.learning_rate, eps=1e-5)
        self.pool: list[tuple[str, ConnectFourNet]] = []
        self.pool_players: list[PolicyPlayer] = []
        self.random_player = RandomPlayer(seed + 11)
        self.heuristic_player = OneStepLookaheadPlayer(seed + 12)
        self.latest_player = PolicyPlayer("latest", self.net, seed + 13)
        self.global_step = 0
        self.updates = 0
        n = settings.num_envs
        self.board = ConnectFourBatch(n)
        self.learner_seat = np.zeros(n, dtype=np.int8)
        self.opponent = np.full(n, LATEST, dtype=np.int64)
        self.episode_plies = np.zeros(n, dtype=np.int64)
        self.finished: list[tuple[float, int, int]] = []  # (learner reward, plies, opponent code)
        # Online Elo of the learner against the pool snapshots and scripted players it meets in training.
        self.elo = EloLadder(k_factor=settings.elo_k_factor)
        for name in (LEARNER, self.random_player.name, self.heuristic_player.name):
            self.elo.add_player(name)
        self.snapshot("step_0")
        self._start_games(np.arange(n))

    # ------------------------------------------------------------------ opponents and games

    def snapshot(self, name: str) -> None:
        """Add a frozen copy of the current policy to the pool, dropping the oldest beyond ``pool_size``."""
        frozen = copy.deepcopy(self.net).eval()
        for parameter in frozen.parameters():
            parameter.requires_grad_(False)
        self.pool.append((name, frozen))
        self.pool_players.append(PolicyPlayer(name, frozen, self.seed + 100 + len(self.pool)))
        # A new snapshot enters the ladder at the learner's current rating.
        self.elo.ratings.setdefault(name, self.elo.ratings[LEARNER])
        self.elo.games.setdefault(name, 0)
        if len(self.pool) > self.settings.pool_size:
            self.pool.pop(0)
            self.pool_players.pop(0)
            # Games in progress keep their snapshot; those against the dropped one continue against the newest.
            dropped = self.opponent == 0
            self.opponent[self.opponent > 0] -= 1
            self.opponent[dropped] = len(self.pool) - 1

    def _sample_opponents(self, count: int) -> np.ndarray:
        """Draw opponent codes: scripted players first by their shares, then latest or a pool snapshot."""
        s = self.settings
        codes = self.rng.integers(0, len(self.pool), size=count)
        codes = np.where(self.rng.random(count) < s.latest_fraction, LATEST, codes)
        scripted = self.rng.random(count)
        codes = np.where(scripted < s.heuristic_fraction, HEURISTIC, codes)
        codes = np.where((scripted >= s.heuristic_fraction) & (scripted < s.heuristic_fraction + s.random_fraction), RANDOM, codes)
        return codes

    def _record_elo(self, code: int, learner_seat: int, reward: float) -> None:
        """Update the online Elo table with one finished game; games against the current policy itself are skipped."""
        if code == LATEST:
            return
        opponent = self._player(code).name
        score = (reward + 1.0) / 2.0  # +1 win, 0 draw, -1 loss from the learner's view
        if learner_seat == 0:
            self.elo.record(GameRecord(LEARNER, opponent, score))
        else:
            self.elo.record(GameRecord(opponent, LEARNER, 1.0 - score))

    def learner_elo(self) -> float:
        """Return the learner's online Elo, shifted so that the uniform random player is at 1000."""
        return self.elo.ratings[LEARNER] - self.elo.ratings[self.random_player.name] + 1000.0

    def _player(self, code: int) -> BatchPlayer:
        if code == LATEST:
            return self.latest_player
        if code == RANDOM:
            return self.random_player
        if code == HEURISTIC:
            return self.heuristic_player
        return self.pool_players[code]

    def _opponents_move(self, games: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Let each game's opponent move in ``games``; return (opponent won, draw) aligned with ``games``."""
        won = np.zeros(games.size, dtype=bool)
        draw = np.zeros(games.size, dtype=bool)
        for code in np.unique(self.opponent[games]):
            position = np.flatnonzero(self.opponent[games] == code)
            subset = games[position]
            actions = self._player(int(code)).act_batch(self.board.planes(subset), self.board.legal_mask(subset))
            won[position], draw[position] = self.board.play(subset, actions)
        self.global_step += int(games.size)
        self.episode_plies[games] += 1
        return won, draw

    def _start_games(self, games: np.ndarray) -> None:
        """Reset ``games``, draw their seats and opponents, and play the opponent's opening move where it sits first."""
        self.board.reset(games)
        self.episode_plies[games] = 0
        self.learner_seat[games] = self.rng.integers(0, 2, size=games.size)
        self.opponent[games] = self._sample_opponents(games.size)
        second = games[self.learner_seat[games] == 1]
        if second.size:
            self._opponents_move(second)

    # ------------------------------------------------------------------ rollout and update

    def collect(self) -> dict[str, np.ndarray]:
        """Play ``rollout_steps`` learner moves in every game; return the rollout with GAE advantages."""
        s = self.settings
        steps, n = s.rollout_steps, s.num_envs
        planes = np.zeros((steps, n, 2, 6, COLUMNS), dtype=np.float32)
        legal = np.zeros((steps, n, COLUMNS), dtype=bool)
        actions = np.zeros((steps, n), dtype=np.int64)
        log_probs = np.zeros((steps, n), dtype=np.float32)
        values = np.zeros((steps, n), dtype=np.float32)
        rewards = np.zeros((steps, n), dtype=np.float32)
        dones = np.zeros((steps, n), dtype=np.float32)
        everyone = np.arange(n)
        for t in range(steps):
            planes[t] = self.board.planes()
            legal[t] = self.board.legal_mask()
            with torch.no_grad():
                logits, value = self.net(torch.as_tensor(planes[t]))
                step_log_probs, _ = masked_log_probs_and_entropy(logits, torch.as_tensor(legal[t]))
                chosen = torch.multinomial(step_log_probs.exp(), 1, generator=self.generator).squeeze(1)
            actions[t] = chosen.numpy()
            log_probs[t] = step_log_probs.gather(1, chosen[:, None]).squeeze(1).numpy()
            values[t] = value.numpy()

            won, draw = self.board.play(everyone, actions[t])
            self.global_step += n
            self.episode_plies += 1
            reward = won.astype(np.float32)
            done = won | draw
            going_on = everyone[~done]
            if going_on.size:
                opponent_won, opponent_draw = self._opponents_move(going_on)
                reward[going_on] -= opponent_won.astype(np.float32)
                done[going_on] |= opponent_won | opponent_draw
            rewards[t] = reward
            dones[t] = done
            ended = everyone[done]
            for game in ended:
                self.finished.append((float(reward[game]), int(self.episode_plies[game]), int(self.opponent[game])))
                self._record_elo(int(self.opponent[game]), int(self.learner_seat[game]), float(reward[game]))
            if ended.size:
                self._start_games(ended)

        with torch.no_grad():
            _, last_value = self.net(torch.as_tensor(self.board.planes()))
        valid = np.ones((steps, n), dtype=bool)
        advantages, returns = compute_gae(rewards, values, dones, dones, valid, last_value.numpy(), s.gamma, s.gae_lambda)
        return {
            "planes": planes.reshape(steps * n, 2, 6, COLUMNS),
            "legal": legal.reshape(steps * n, COLUMNS),
            "actions": actions.reshape(-1),
            "log_probs": log_probs.reshape(-1),
            "values": values.reshape(-1),
            "advantages": advantages.reshape(-1),
            "returns": returns.reshape(-1),
        }

    def update(self, batch: dict[str, np.ndarray]) -> dict[str, float]:
        """Run PPO's clipped-surrogate update over the rollout; return the loss tags.

        Log-probabilities and entropy come from the masked policy; the objective is the shared
        :func:`shared.agents.ppo.ppo_loss`.
        """
        s = self.settings
        if s.anneal_lr:
            fraction = max(1.0 - self.global_step / self.total_steps, 0.0)
            self.optimizer.param_groups[0]["lr"] = fraction * s.learning_rate
        tensors = {key: torch.as_tensor(value) for key, value in batch.items()}
        if s.mirror_augment:
            tensors = self._with_mirror(tensors)
        size = tensors["actions"].shape[0]
        minibatch = max(size // s.num_minibatches, 1)
        stats: dict[str, list[float]] = {"policy_loss": [], "value_loss": [], "entropy": [], "approx_kl": [], "clipfrac": []}
        for _ in range(s.update_epochs):
            order = torch.randperm(size, generator=self.generator)
            for start in range(0, size, minibatch):
                index = order[start : start + minibatch]
                logits, value = self.net(tensors["planes"][index])
                log_probs, entropy = masked_log_probs_and_entropy(logits, tensors["legal"][index])
                new_log_prob = log_probs.gather(1, tensors["actions"][index][:, None]).squeeze(1)
                advantages = tensors["advantages"][index]
                advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
                loss, parts = ppo_loss(
                    new_log_prob,
                    tensors["log_probs"][index],
                    advantages,
                    value,
                    tensors["values"][index],
                    tensors["returns"][index],
                    entropy,
                    clip_coef=s.clip_coef,
                    clip_vloss=s.clip_vloss,
                    ent_coef=s.ent_coef,
                    vf_coef=s.vf_coef,
                )
                self.optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.net.parameters(), s.max_grad_norm)
                self.optimizer.step()
                for key, part in parts.items():
                    stats[key].append(float(part))
        self.updates += 1
        if self.updates % s.snapshot_interval == 0:
            self.snapshot(f"step_{self.global_step}")
        tags = {f"losses/{key}": float(np.mean(values)) for key, values in stats.items()}
        tags["charts/learning_rate"] = float(self.optimizer.param_groups[0]["lr"])
        return tags

    @torch.no_grad()
    def _with_mirror(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Append the left-right mirror of every position to the batch.

        Connect Four's rules are symmetric under the mirror, so column ``a`` in a position is worth
        what column ``6 - a`` is worth in its mirror: the mirrored sample keeps the advantage and
        return. Its behaviour log-probability and value come from the current (pre-update)
        network, so PPO's ratio starts at 1 for both halves.
        """
        planes = tensors["planes"].flip(-1)
        legal = tensors["legal"].flip(-1)
        actions = COLUMNS - 1 - tensors["actions"]
        logits, values = self.net(planes)
        log_probs, _ = masked_log_probs_and_entropy(logits, legal)
        mirrored = {
            "planes": planes,
            "legal": legal,
            "actions": actions,
            "log_probs": log_probs.gather(1, actions[:, None]).squeeze(1),
            "values": values,
            "advantages": tensors["advantages"],
            "returns": tensors["returns"],
        }
        return {key: torch.cat([tensors[key], mirrored[key]]) for key in tensors}

    def drain_episode_stats(self) -> dict[str, float]:
        """Return and clear the chart tags of the games finished since the last call."""
        if not self.finished:
            return {}
        rewards = np.array([f[0] for f in self.finished])
        plies = np.array([f[1] for f in self.finished])
        codes = np.array([f[2] for f in self.finished])
        tags = {
            "charts/episodic_return": float(rewards.mean()),
            "charts/episodic_length": float(plies.mean()),
            "selfplay/pool_size": float(len(self.pool)),
            "selfplay/elo": self.learner_elo(),
        }
        latest = codes == LATEST
        if latest.any():
            tags["selfplay/win_rate_vs_latest"] = float(np.mean(rewards[latest] == 1.0))
        past = codes >= 0
        if past.any():
            tags["selfplay/win_rate_vs_pool"] = float(np.mean(rewards[past] == 1.0))
        self.finished.clear()
        return tags

    def train(
        self,
        on_update: Callable[[dict[str, float]], None],
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        """Collect and update until ``total_steps`` plies; ``on_update`` receives each update's tags."""
        started = time.perf_counter()
        start_step = self.global_step
        while self.global_step < self.total_steps and not should_stop():
            batch = self.collect()
            tags = self.update(batch)
            tags.update(self.drain_episode_stats())
            elapsed = max(time.perf_counter() - started, 1e-9)
            tags["charts/SPS"] = (self.global_step - start_step) / elapsed
            on_update(tags)

    def state_for_checkpoint(self) -> dict[str, Any]:
        """Return the counters written into the checkpoint's JSON beside the weights."""
        return {"global_step": self.global_step, "updates": self.updates, "pool": [name for name, _ in self.pool]}

    def run_state(self) -> dict[str, Any]:
        """Return everything ``--resume`` needs beyond the learner's weights, as tensors, arrays and plain values.

        That is the optimiser (Adam moments and step), the step and update counters, the pool
        snapshots with their sampling generators, the online Elo table, the games in progress and
        every RNG. A resumed run therefore plays and updates exactly as an uninterrupted one would.
        """
        return {
            "optimizer": self.optimizer.state_dict(),
            "counters": {"global_step": self.global_step, "updates": self.updates},
            "pool": [
                {"name": name, "weights": net.state_dict(), "generator": player.generator.get_state()}
                for (name, net), player in zip(self.pool, self.pool_players)
            ],
            "elo": {"ratings": dict(self.elo.ratings), "games": dict(self.elo.games)},
            "games": {
                "board": self.board.board.copy(),
                "to_move": self.board.to_move.copy(),
                "plies": self.board.plies.copy(),
                "learner_seat": self.learner_seat.copy(),
                "opponent": self.opponent.copy(),
                "episode_plies": self.episode_plies.copy(),
                "finished": [list(item) for item in self.finished],
            },
            "rng": {
                "sampling": self.rng.bit_generator.state,
                "generator": self.generator.get_state(),
                "random_player": self.random_player.rng.bit_generator.state,
                "heuristic_player": self.heuristic_player.rng.bit_generator.state,
                "latest_player": self.latest_player.generator.get_state(),
                "global": rng_state(),
            },
        }

    def load_run_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`run_state` (the learner's weights are loaded separately)."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.global_step = int(state["counters"]["global_step"])
        self.updates = int(state["counters"]["updates"])

        self.pool, self.pool_players = [], []
        for entry in state["pool"]:
            frozen = copy.deepcopy(self.net).eval()
            frozen.load_state_dict(entry["weights"])
            for parameter in frozen.parameters():
                parameter.requires_grad_(False)
            player = PolicyPlayer(entry["name"], frozen)
            player.generator.set_state(entry["generator"])
            self.pool.append((entry["name"], frozen))
            self.pool_players.append(player)
        self.elo.ratings = {name: float(value) for name, value in state["elo"]["ratings"].items()}
        self.elo.games = {name: int(value) for name, value in state["elo"]["games"].items()}

        games = state["games"]
        self.board.board[:] = games["board"]
        self.board.to_move[:] = games["to_move"]
        self.board.plies[:] = games["plies"]
        self.learner_seat[:] = games["learner_seat"]
        self.opponent[:] = games["opponent"]
        self.episode_plies[:] = games["episode_plies"]
        self.finished = [(float(reward), int(plies), int(code)) for reward, plies, code in games["finished"]]

        rng = state["rng"]
        self.rng.bit_generator.state = rng["sampling"]
        self.generator.set_state(rng["generator"])
        self.random_player.rng.bit_generator.state = rng["random_player"]
        self.heuristic_player.rng.bit_generator.state = rng["heuristic_player"]
        self.latest_player.generator.set_state(rng["latest_player"])
        set_rng_state(rng["global"])


# ---------------------------------------------------------------------------------------------
# Evaluation against the scripted players on the real PettingZoo env


def evaluate_against(agent_move: MoveFn, opponent_move: MoveFn, games_per_seat: int, seeds: list[int]) -> list[dict[str, float]]:
    """Play ``games_per_seat`` games per seed in each seat on PettingZoo's env; one dict per game.

    Each dict contains ``win``, ``draw``, ``loss`` (0 or 1), ``return`` (the agent's reward),
    ``length`` (plies) and ``seat`` (0 when the agent moved first).
    """
    env = make_pettingzoo_env()
    records: list[dict[str, float]] = []
    try:
        for seed in seeds:
            for game in range(games_per_seat):
                for seat in (0, 1):
                    players = (agent_move, opponent_move) if seat == 0 else (opponent_move, agent_move)
                    reward_first, plies = play_pettingzoo_game(env, *players, seed=seed * 100_003 + game)
                    reward = reward_first if seat == 0 else -reward_first
                    records.append(
                        {"win": float(reward > 0), "draw": float(reward == 0), "loss": float(reward < 0), "return": reward, "length": float(plies), "seat": float(seat)}
                    )
    finally:
        env.close()
    return records


def summarize_games(records: list[dict[str, float]], opponent: str, samples: int, seed: int) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Win, draw and loss rates against ``opponent`` overall and per seat, with bootstrap 95% CIs."""
    metrics: dict[str, float] = {}
    ci95: dict[str, list[float]] = {}
    groups = {"": records, "_first": [r for r in records if r["seat"] == 0], "_second": [r for r in records if r["seat"] == 1]}
    for suffix, group in groups.items():
        for outcome in ("win", "draw", "loss"):
            values = np.array([r[outcome] for r in group])
            name = f"{outcome}_rate_vs_{opponent}{suffix}"
            metrics[name] = float(values.mean())
            ci95[name] = list(bootstrap_ci(values, samples=samples, seed=seed))
    return metrics, ci95


def evaluate_policy_games(
    agent_move: MoveFn, games_per_seat: int, seeds: list[int], samples: int, seed: int
) -> tuple[dict[str, float], dict[str, list[float]], int]:
    """Evaluate a move function against the random and lookahead players; return metrics, CIs and game count."""
    metrics: dict[str, float] = {}
    ci95: dict[str, list[float]] = {}
    everything: list[dict[str, float]] = []
    for name, opponent in (("random", RandomPlayer(seed + 1)), ("heuristic", OneStepLookaheadPlayer(seed + 2))):
        records = evaluate_against(agent_move, opponent.choose_move, games_per_seat, seeds)
        part, part_ci = summarize_games(records, name, samples, seed)
        metrics.update(part)
        ci95.update(part_ci)
        everything.extend(records)
    for key, field_name in (("return_mean", "return"), ("episode_length_mean", "length")):
        values = np.array([r[field_name] for r in everything])
        metrics[key] = float(values.mean())
        ci95[key] = list(bootstrap_ci(values, samples=samples, seed=seed))
    return metrics, ci95, len(everything)


def elo_round_robin(players: list[BatchPlayer], games_per_pair: int, k_factor: float, passes: int, seed: int) -> EloLadder:
    """Play every pair ``games_per_pair`` times (half in each seat) and fit Elo, anchoring random at 1000."""
    records: list[GameRecord] = []
    for i, first in enumerate(players):
        for second in players[i + 1 :]:
            half = max(games_per_pair // 2, 1)
            for a, b in ((first, second), (second, first)):
                result = play_match(a, b, half)
                records.extend(GameRecord(a.name, b.name, float(score)) for score in result.score_first)
    ladder = EloLadder(k_factor=k_factor)
    for player in players:
        ladder.add_player(player.name)
    ladder.fit(records, passes=passes, seed=seed)
    if "random" in ladder.ratings:
        ladder.anchor("random", 1000.0)
    return ladder


# ---------------------------------------------------------------------------------------------
# The scenario kind


def _evaluation_table(metrics: dict[str, float], ci95: dict[str, list[float]], baseline: dict[str, float] | None) -> str:
    lines = [
        "## Evaluation on PettingZoo connect_four_v3",
        "",
        "Greedy policy against each scripted player, in both seats. Brackets give bootstrap 95% confidence intervals.",
        "",
        "| opponent | seat | win | draw | loss | random player's win rate |",
        "|---|---|---|---|---|---|",
    ]
    for opponent in ("random", "heuristic"):
        for suffix, seat in (("_first", "first"), ("_second", "second"), ("", "both")):
            cells = []
            for outcome in ("win", "draw", "loss"):
                name = f"{outcome}_rate_vs_{opponent}{suffix}"
                lo, hi = ci95[name]
                cells.append(f"{metrics[name]:.3f} [{lo:.3f}, {hi:.3f}]")
            reference = f"{baseline[f'win_rate_vs_{opponent}{suffix}']:.3f}" if baseline else "n/a"
            lines.append(f"| {opponent} | {seat} | {' | '.join(cells)} | {reference} |")
    return "\n".join(lines)


def _elo_table(ladder: EloLadder) -> str:
    lines = [
        "## Elo ladder",
        "",
        f"Round robin over the opponent pool and the scripted players, K = {ladder.k_factor:g}, uniform random player anchored at 1000.",
        "",
        "| player | Elo | games |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {rating:.0f} | {games} |" for name, rating, games in ladder.table()]
    return "\n".join(lines)


class ConnectFourSelfPlayKind(ScenarioKind):
    """Self-play PPO on ``connect_four_v3`` with an opponent pool, win rates with CIs and an Elo ladder.

    ``checkpoint_path`` names the policy that ``scenariolab eval`` (and ``run`` with ``train:
    false``) evaluates; training starts from scratch unless ``settings.warm_start`` is true.
    """

    name = "connect_four_selfplay"
    domain = "game_ai"
    description = "Masked PPO self-play on PettingZoo connect_four_v3 with an opponent pool and an Elo ladder."
    needs_agent = False
    settings_model = SelfPlaySettings
    perturbations: dict[str, Perturbation] = {}

    def validate(self, loaded: "LoadedScenario") -> None:
        scenario = loaded.scenario
        source = str(loaded.source)
        if scenario.env is None:
            raise ScenarioError(located(source, "env", f"required: env: {{id: {GAME_ID}}}"))
        if scenario.env.id != GAME_ID:
            raise ScenarioError(unknown_choice(source, "env.id", scenario.env.id, [GAME_ID]))
        if scenario.env.config:
            raise ScenarioError(located(source, "env.config", f"{GAME_ID} takes no config here; allowed: {{}}"))
        extra = sorted(set(scenario.agent) - {"name"})
        if extra:
            raise ScenarioError(located(source, f"agent.{extra[0]}", "this kind reads its PPO parameters from settings; allowed under agent: name"))
        if scenario.agent.get("name", "ppo") != "ppo":
            raise ScenarioError(unknown_choice(source, "agent.name", scenario.agent.get("name"), ["ppo"]))
        self.validate_perturb(scenario.perturb, source)
        settings: SelfPlaySettings = loaded.settings
        if settings.warm_start and not scenario.checkpoint_path:
            raise ScenarioError(located(source, "settings.warm_start", "needs checkpoint_path to start from"))

    def run(self, loaded: "LoadedScenario", run_dir: "RunDir", options: RunOptions) -> dict[str, Any]:
        scenario = loaded.scenario
        settings: SelfPlaySettings = loaded.settings
        seed = options.seed if options.seed is not None else scenario.seed
        seed_everything(seed)
        # The networks are small, so one thread avoids synchronisation costs that outweigh any parallel speedup.
        torch.set_num_threads(1)
        total_steps = scenario.steps_for(options.budget) if scenario.train else 0
        if not options.resume:
            run_dir.write_scenario(loaded)
        started = time.perf_counter()

        trainer = SelfPlayTrainer(settings, max(total_steps, 1), seed)
        resume_step: int | None = None
        if options.resume:
            if total_steps == 0:
                raise ScenarioError(located(str(loaded.source), "--resume", "the scenario trains nothing (train: false or a zero budget); resume needs a budget"))
            seed = self._resume(trainer, run_dir.checkpoints / "latest", loaded)
            resume_step = trainer.global_step
        elif total_steps == 0 or settings.warm_start:
            if not scenario.checkpoint_path:
                raise ScenarioError(located(str(loaded.source), "checkpoint_path", "the scenario trains nothing (train: false or a zero budget), so it needs a checkpoint to evaluate"))
            net, _ = load_policy(loaded.resolve_path(scenario.checkpoint_path))
            self._check_architecture(net, settings, loaded)
            trainer.net.load_state_dict(net.state_dict())
        interrupted = False
        if total_steps > 0:
            interrupted = self._train(trainer, loaded, run_dir, options, seed, resume_step)

        latest = self._save_latest(trainer, run_dir, scenario.name, seed) if total_steps > 0 else save_policy(
            run_dir.checkpoints / "latest", trainer.net, {"scenario": scenario.name, "seed": seed, **trainer.state_for_checkpoint()}
        )
        if interrupted:
            return {"interrupted": True, "global_step": trainer.global_step, "checkpoint": str(latest)}
        for name, net in trainer.pool:
            save_policy(run_dir.checkpoints / "pool" / name, net, {"scenario": scenario.name, "seed": seed})

        train_seconds = time.perf_counter() - started
        final = PolicyPlayer("final", trainer.net, seed + 7)
        pool_players = [PolicyPlayer(name, net, seed + 20 + i) for i, (name, net) in enumerate(trainer.pool)] if total_steps > 0 else []
        return self._evaluate_and_write(
            loaded, run_dir, trainer.net, final, pool_players, seed, options_extra={
                "budget": options.budget,
                "train_steps": trainer.global_step if total_steps > 0 else 0,
                "train_seconds": round(train_seconds, 2),
                "checkpoint": str(latest),
            },
        )

    def evaluate(self, loaded: "LoadedScenario", run_dir: "RunDir", options: EvalOptions) -> dict[str, Any]:
        scenario = loaded.scenario
        source = str(loaded.source)
        checkpoint = options.checkpoint or (loaded.resolve_path(scenario.checkpoint_path) if scenario.checkpoint_path else None)
        if checkpoint is None:
            raise ScenarioError(located(source, "--checkpoint", "required: the scenario ships no checkpoint_path"))
        self.validate_perturb(options.perturb, source, "--perturb")
        net, _ = load_policy(checkpoint)
        self._check_architecture(net, loaded.settings, loaded)
        seed_everything(scenario.seed)
        run_dir.write_scenario(loaded)
        final = PolicyPlayer("final", net, scenario.seed + 7)
        return self._evaluate_and_write(
            loaded, run_dir, net, final, [], scenario.seed, options_extra={"checkpoint": str(checkpoint)},
            episodes=options.episodes, seeds=options.seeds, random_baseline=options.random_baseline,
        )

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _save_latest(trainer: SelfPlayTrainer, run_dir: "RunDir", scenario_name: str, seed: int) -> Path:
        """Write ``checkpoints/latest``: the learner's weights plus the run state that ``--resume`` restores."""
        metadata = {"scenario": scenario_name, "seed": seed, **trainer.state_for_checkpoint()}
        return save_policy(run_dir.checkpoints / "latest", trainer.net, metadata, run_state=trainer.run_state())

    def _resume(self, trainer: SelfPlayTrainer, stem: Path, loaded: "LoadedScenario") -> int:
        """Load a resumable ``latest`` checkpoint into ``trainer``; return the run's seed."""
        where = f"{stem}.json"
        state, metadata = load_run_checkpoint(stem, loaded.scenario.name)
        net, _ = load_policy(stem)
        self._check_architecture(net, loaded.settings, loaded)
        try:
            trainer.net.load_state_dict(net.state_dict())
            trainer.load_run_state(state)
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise CheckpointError(f"{where}: state: the run state does not fit this scenario ({str(error).splitlines()[0]})") from None
        logger.info("resumed from %s at global_step %d with %d pool snapshots", stem, trainer.global_step, len(trainer.pool))
        return int(metadata.get("seed", trainer.seed))

    @staticmethod
    def _check_architecture(net: ConnectFourNet, settings: SelfPlaySettings, loaded: "LoadedScenario") -> None:
        expected = {"hidden_sizes": list(settings.hidden_sizes), "torso": settings.torso, "channels": settings.channels, "features": settings.features}
        for key, value in net.describe().items():
            if value != expected[key]:
                raise CheckpointError(f"{loaded.source}: settings.{key}: the checkpoint has {value!r}, the scenario asks for {expected[key]!r}")

    def _train(self, trainer: SelfPlayTrainer, loaded: "LoadedScenario", run_dir: "RunDir", options: RunOptions, seed: int, resume_step: int | None = None) -> bool:
        """Run the training loop with logging, periodic evaluation, checkpoints and Ctrl-C; return True if interrupted."""
        scenario = loaded.scenario
        settings: SelfPlaySettings = loaded.settings
        metric_logger = MetricLogger(run_dir.path, scenario.logging.tensorboard, resume_step=resume_step)
        bar = progress_bar(trainer.total_steps, trainer.global_step, enabled=options.progress, desc="self-play")

        def next_multiple(interval: int) -> int | None:
            # The first evaluation or checkpoint due after the current step (a resumed run starts past 0).
            return (trainer.global_step // interval + 1) * interval if interval else None

        next_eval = next_multiple(scenario.evaluation.interval)
        next_checkpoint = next_multiple(scenario.checkpoint.interval)
        state = {"logged": trainer.global_step}

        def on_update(tags: dict[str, float]) -> None:
            nonlocal next_eval, next_checkpoint
            step = trainer.global_step
            if next_eval is not None and step >= next_eval:
                quick = quick_evaluation(PolicyPlayer("eval", trainer.net, seed, greedy=True), settings.eval_games, seed + 1000)
                tags.update({f"eval/{key}": value for key, value in quick.items()})
                next_eval = next_multiple(scenario.evaluation.interval)
            if trainer.updates % scenario.logging.interval == 0 or "eval/win_rate_vs_random" in tags:
                metric_logger.log(step, tags)
            if next_checkpoint is not None and step >= next_checkpoint:
                self._save_latest(trainer, run_dir, scenario.name, seed)
                next_checkpoint = next_multiple(scenario.checkpoint.interval)
            if bar is not None:
                bar.update(step - state["logged"])
                state["logged"] = step
                postfix = {"SPS": f"{tags.get('charts/SPS', 0):.0f}"}
                if "charts/episodic_return" in tags:
                    postfix["return"] = f"{tags['charts/episodic_return']:.2f}"
                bar.set_postfix(postfix)

        try:
            with InterruptFlag() as interrupt:
                trainer.train(on_update, should_stop=lambda: interrupt.requested)
        finally:
            metric_logger.close()
            if bar is not None:
                bar.close()
        return interrupt.requested

    def _evaluate_and_write(
        self,
        loaded: "LoadedScenario",
        run_dir: "RunDir",
        net: ConnectFourNet,
        final: PolicyPlayer,
        pool_players: list[PolicyPlayer],
        seed: int,
        options_extra: dict[str, Any],
        episodes: int | None = None,
        seeds: list[int] | None = None,
        random_baseline: bool = True,
    ) -> dict[str, Any]:
        """Evaluate on PettingZoo, fit the Elo ladder, and write metrics.json, elo.json and report.md."""
        scenario = loaded.scenario
        settings: SelfPlaySettings = loaded.settings
        evaluation = scenario.evaluation
        games_per_seat = episodes or evaluation.episodes
        seeds = seeds or evaluation.seeds
        agent = ConnectFourAgent(net)
        metrics, ci95, games = evaluate_policy_games(agent.choose_move, games_per_seat, seeds, evaluation.bootstrap_samples, seed)

        baselines: dict[str, dict[str, Any]] = {}
        baseline_rates: dict[str, float] | None = None
        if random_baseline and evaluation.random_baseline:
            random_player = RandomPlayer(seed + 3)
            base_metrics, base_ci, _ = evaluate_policy_games(random_player.choose_move, games_per_seat, seeds, evaluation.bootstrap_samples, seed)
            baselines["random"] = {"metrics": base_metrics, "ci95": base_ci}
            baseline_rates = base_metrics

        ladder_players: list[BatchPlayer] = [*pool_players, final, RandomPlayer(seed + 4), OneStepLookaheadPlayer(seed + 5)]
        ladder = elo_round_robin(ladder_players, settings.elo_games_per_pair, settings.elo_k_factor, settings.elo_passes, seed)
        metrics["elo"] = float(ladder.ratings["final"])
        run_dir.write_json("elo.json", {"k_factor": ladder.k_factor, "anchor": {"random": 1000.0}, "ratings": ladder.ratings, "games": ladder.games})

        summary = metrics_summary(loaded, "ppo", seed, games, metrics, ci95, baselines, extra={**options_extra, "games_per_seat": games_per_seat * len(seeds)})
        run_dir.write_metrics(summary)
        sections = [_evaluation_table(metrics, ci95, baseline_rates), _elo_table(ladder)]
        sections[:0] = _win_rate_curves(run_dir.path)
        write_report(run_dir.path, sections)
        return summary


def _win_rate_curves(run_path: Path) -> list[str]:
    """Plot the win rates of the evaluations during training; return the report section, if any."""
    if not (run_path / "metrics.jsonl").exists():
        return []
    records = read_jsonl(run_path / "metrics.jsonl")
    lines: list[str] = []
    for opponent in ("random", "heuristic"):
        tag = f"eval/win_rate_vs_{opponent}"
        image = f"win_rate_vs_{opponent}.png"
        if plot_curve(records, tag, run_path / image, f"Greedy win rate against the {opponent} player (batched board)"):
            lines.append(f"![{tag}]({image})")
    if not lines:
        return []
    return ["## Win rates during training\n\n" + "\n\n".join(lines)]


def register() -> None:
    """Register the ``connect_four_selfplay`` kind."""
    register_kind(ConnectFourSelfPlayKind())
