"""Connect Four for self-play: a batched board, the masked actor-critic and the demo's agent API.

The training loop steps hundreds of games at once. PettingZoo's ``connect_four_v3`` runs one
Python game per object, so :class:`ConnectFourBatch` re-implements its rules on NumPy arrays with
the same board layout. Row 0 is the top row, player_0 moves first, and an observation is two 6x7
planes (the mover's tokens, then the opponent's). A test replays random games in both and checks
that boards, masks, winners and rewards agree move for move. Evaluation plays the real PettingZoo env.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch
from torch import nn

from shared.checkpoints import flatten_state, load_checkpoint, save_checkpoint
from shared.errors import CheckpointError
from shared.networks import MLP, layer_init

ROWS = 6
COLUMNS = 7
GAME_ID = "connect_four_v3"
OBSERVATION_SHAPE = (2, ROWS, COLUMNS)

# The four line directions (row step, column step) a connect-four can run in.
_DIRECTIONS = ((0, 1), (1, 0), (1, 1), (1, -1))


def four_in_a_row(planes: np.ndarray) -> np.ndarray:
    """Return, for a batch of boolean ``(N, 6, 7)`` token planes, whether each contains four in a row."""
    found = np.zeros(planes.shape[0], dtype=bool)
    for d_row, d_col in _DIRECTIONS:
        row_span = ROWS - 3 * d_row
        col_lo = 3 if d_col < 0 else 0
        col_hi = COLUMNS if d_col < 0 else COLUMNS - 3 * d_col
        line = np.ones((planes.shape[0], row_span, col_hi - col_lo), dtype=bool)
        for k in range(4):
            r0 = k * d_row
            c0 = col_lo + k * d_col
            line &= planes[:, r0 : r0 + row_span, c0 : c0 + (col_hi - col_lo)]
        found |= line.reshape(planes.shape[0], -1).any(axis=1)
    return found


class ConnectFourBatch:
    """``N`` Connect Four games stepped together with the rules of PettingZoo's ``connect_four_v3``.

    Board:
        ``board[i, r, c]`` is 0 (empty), 1 (player_0) or 2 (player_1); row 0 is the top row.
    Observation:
        :meth:`planes` gives ``(N, 2, 6, 7)`` float32 planes from the view of the player to move.
        Plane 0 contains that player's tokens and plane 1 the opponent's, as in PettingZoo's
        ``observation[..., 0]`` and ``[..., 1]``. :meth:`legal_mask` gives the ``(N, 7)`` legal columns.
    Rewards:
        :meth:`play` reports which games the mover won (+1 to the mover, -1 to the other player)
        and which ended in a draw (a full board, 0 to both).
    Episode end:
        A win or a full board. Finished games stay finished until :meth:`reset` restarts them.
    """

    def __init__(self, num_games: int):
        self.num_games = num_games
        self.board = np.zeros((num_games, ROWS, COLUMNS), dtype=np.int8)
        self.to_move = np.zeros(num_games, dtype=np.int8)
        self.plies = np.zeros(num_games, dtype=np.int16)

    def reset(self, indices: np.ndarray | None = None) -> None:
        """Empty the boards of ``indices`` (all games when None); player_0 moves first."""
        if indices is None:
            indices = np.arange(self.num_games)
        self.board[indices] = 0
        self.to_move[indices] = 0
        self.plies[indices] = 0

    def legal_mask(self, indices: np.ndarray | None = None) -> np.ndarray:
        """Return the boolean ``(N, 7)`` mask of columns whose top cell is empty."""
        board = self.board if indices is None else self.board[indices]
        return board[:, 0, :] == 0

    def planes(self, indices: np.ndarray | None = None) -> np.ndarray:
        """Return ``(N, 2, 6, 7)`` float32 planes from the view of each game's player to move."""
        board = self.board if indices is None else self.board[indices]
        to_move = self.to_move if indices is None else self.to_move[indices]
        own = (board == (to_move[:, None, None] + 1)).astype(np.float32)
        opponent = (board == (2 - to_move[:, None, None])).astype(np.float32)
        return np.stack([own, opponent], axis=1)

    def play(self, indices: np.ndarray, columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Drop the mover's token into ``columns`` of games ``indices``; return (mover won, draw).

        Raises ValueError on a full column, because PettingZoo ends such a game with a penalty
        that a masked policy must never incur.
        """
        indices = np.asarray(indices, dtype=np.int64)
        columns = np.asarray(columns, dtype=np.int64)
        if indices.size == 0:
            return np.zeros(0, dtype=bool), np.zeros(0, dtype=bool)
        column_cells = self.board[indices, :, columns]  # (n, ROWS)
        if np.any(column_cells[:, 0] != 0):
            raise ValueError(f"illegal move: column full in games {indices[column_cells[:, 0] != 0].tolist()}")
        # The token lands in the lowest empty row, which is the number of empty cells minus one.
        landing_row = (column_cells == 0).sum(axis=1) - 1
        piece = self.to_move[indices] + 1
        self.board[indices, landing_row, columns] = piece
        self.plies[indices] += 1
        won = four_in_a_row(self.board[indices] == piece[:, None, None])
        draw = ~won & (self.plies[indices] >= ROWS * COLUMNS)
        self.to_move[indices] = 1 - self.to_move[indices]
        return won, draw


def _lines_of_four() -> np.ndarray:
    """Return the 69 lines of four cells on the board as ``(69, 4)`` flat indices ``row * 7 + column``."""
    lines = []
    for d_row, d_col in _DIRECTIONS:
        for row in range(ROWS):
            for column in range(COLUMNS):
                cells = [(row + k * d_row, column + k * d_col) for k in range(4)]
                if all(0 <= r < ROWS and 0 <= c < COLUMNS for r, c in cells):
                    lines.append([r * COLUMNS + c for r, c in cells])
    return np.array(lines, dtype=np.int64)


LINES = _lines_of_four()
# _INCIDENCE[line * 4 + k, cell] is 1 when the k-th cell of that line is ``cell``. A product with it scatters per-line flags onto cells.
_INCIDENCE = torch.zeros(LINES.size, ROWS * COLUMNS)
_INCIDENCE[torch.arange(LINES.size), torch.as_tensor(LINES.reshape(-1))] = 1.0
TACTICAL_CHANNELS = 5
SAFETY_CHANNELS = 9
# Input channels of each ``features`` choice of :class:`ConnectFourNet`.
FEATURE_CHANNELS = {"raw": 2, "tactical": TACTICAL_CHANNELS, "tactical_safety": SAFETY_CHANNELS}


def tactical_planes(planes: torch.Tensor) -> torch.Tensor:
    """Add rule-derived planes to a ``(B, 2, 6, 7)`` batch and return ``(B, 5, 6, 7)``.

    The channels are: own tokens, opponent tokens, playable cells (the lowest empty cell of each
    column), empty cells where an own token would complete four, and empty cells where an opponent
    token would. They are read off the current board (no search), so a small network learns to take
    wins, block, and avoid filling the cell under an opponent's threat within a CPU-sized budget.
    """
    batch = planes.shape[0]
    own = planes[:, 0].reshape(batch, -1).float()
    opponent = planes[:, 1].reshape(batch, -1).float()
    empty = 1.0 - own - opponent
    lines = torch.as_tensor(LINES)
    empty_in_line = empty[:, lines]  # (B, 69, 4)
    own_completes = ((own[:, lines].sum(-1) == 3).unsqueeze(-1) * empty_in_line).reshape(batch, -1) @ _INCIDENCE
    opponent_completes = ((opponent[:, lines].sum(-1) == 3).unsqueeze(-1) * empty_in_line).reshape(batch, -1) @ _INCIDENCE
    grid_empty = empty.reshape(batch, ROWS, COLUMNS)
    below_filled = torch.ones_like(grid_empty)
    below_filled[:, :-1] = 1.0 - grid_empty[:, 1:]
    playable = grid_empty * below_filled
    stacked = [
        own.reshape(batch, ROWS, COLUMNS),
        opponent.reshape(batch, ROWS, COLUMNS),
        playable,
        (own_completes > 0).float().reshape(batch, ROWS, COLUMNS),
        (opponent_completes > 0).float().reshape(batch, ROWS, COLUMNS),
    ]
    return torch.stack(stacked, dim=1)


def safety_planes(planes: torch.Tensor) -> torch.Tensor:
    """Add four one-move consequences to :func:`tactical_planes` and return ``(B, 9, 6, 7)``.

    The extra channels mark playable cells (the next token of a column) by what a token there does.
    Channel 5: it completes four for the player to move (a win now). Channel 6: it completes four
    for the opponent (a block now). Channel 7: it lies under a cell that completes four for the
    opponent, so it hands the opponent a win on the next move. Channel 8: it lies under a cell that
    completes four for the player to move, so the opponent can then block that threat. They are read off the board like the other channels,
    without search. As per-cell flags a linear layer can map them to column preferences.
    """
    tactical = tactical_planes(planes)
    playable, own_completes, opponent_completes = tactical[:, 2], tactical[:, 3], tactical[:, 4]
    # Row 0 is the top row, so the cell above (r, c) is (r - 1, c); the top row has nothing above.
    opponent_above = torch.zeros_like(playable)
    opponent_above[:, 1:] = opponent_completes[:, :-1]
    own_above = torch.zeros_like(playable)
    own_above[:, 1:] = own_completes[:, :-1]
    extra = [playable * own_completes, playable * opponent_completes, playable * opponent_above, playable * own_above]
    return torch.cat([tactical, torch.stack(extra, dim=1)], dim=1)


def pettingzoo_planes(observation: np.ndarray) -> np.ndarray:
    """Turn PettingZoo's ``(6, 7, 2)`` observation into the ``(2, 6, 7)`` float32 planes used here."""
    array = np.asarray(observation)
    if array.shape != (ROWS, COLUMNS, 2):
        raise ValueError(f"expected connect_four_v3 board planes of shape (6, 7, 2), got {array.shape}")
    return np.transpose(array, (2, 0, 1)).astype(np.float32)


def masked_logits(logits: torch.Tensor, legal: torch.Tensor) -> torch.Tensor:
    """Set the logits of illegal columns to -inf so that they get probability exactly 0."""
    return logits.masked_fill(~legal, float("-inf"))


def masked_log_probs_and_entropy(logits: torch.Tensor, legal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return log-probabilities (-inf on illegal columns) and the entropy over the legal columns."""
    log_probs = torch.log_softmax(masked_logits(logits, legal), dim=-1)
    # 0 * -inf is NaN in the forward and the backward pass, so illegal columns get a finite stand-in.
    finite_log_probs = torch.where(legal, log_probs, torch.zeros_like(log_probs))
    entropy = -(finite_log_probs.exp() * finite_log_probs * legal).sum(dim=-1)
    return log_probs, entropy


class ConnectFourNet(nn.Module):
    """Separate actor and critic over the board; the actor emits 7 logits, the critic one value.

    ``features="tactical"`` feeds :func:`tactical_planes` (5 channels), ``"tactical_safety"``
    :func:`safety_planes` (9 channels), ``"raw"`` only the 2 token planes. ``torso="mlp"``
    flattens them into MLPs. ``torso="conv"`` first applies a 4x4 convolution without padding:
    every line of four cells lies inside one 4x4 window, so its filters can see any line, and MLP
    heads read the ``channels x 3 x 4`` feature map.
    """

    def __init__(self, hidden_sizes: tuple[int, ...] = (256, 256), torso: str = "mlp", channels: int = 64, features: str = "tactical"):
        super().__init__()
        if torso not in ("mlp", "conv"):
            raise ValueError(f"unknown torso {torso!r}; allowed: mlp, conv")
        if features not in FEATURE_CHANNELS:
            raise ValueError(f"unknown features {features!r}; allowed: {', '.join(FEATURE_CHANNELS)}")
        self.hidden_sizes = tuple(int(size) for size in hidden_sizes)
        self.torso = torso
        self.channels = channels
        self.features = features
        in_channels = FEATURE_CHANNELS[features]
        in_dim = in_channels * ROWS * COLUMNS
        if torso == "conv":
            self.actor_conv = nn.Sequential(layer_init(nn.Conv2d(in_channels, channels, 4)), nn.ReLU(), nn.Flatten())
            self.critic_conv = nn.Sequential(layer_init(nn.Conv2d(in_channels, channels, 4)), nn.ReLU(), nn.Flatten())
            in_dim = channels * (ROWS - 3) * (COLUMNS - 3)
        self.actor = MLP(in_dim, COLUMNS, self.hidden_sizes, activation="relu", output_std=0.01)
        self.critic = MLP(in_dim, 1, self.hidden_sizes, activation="relu", output_std=1.0)

    def describe(self) -> dict[str, Any]:
        """Return the architecture fields stored in checkpoint metadata."""
        return {"hidden_sizes": list(self.hidden_sizes), "torso": self.torso, "channels": self.channels, "features": self.features}

    def forward(self, planes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.features == "tactical":
            planes = tactical_planes(planes)
        elif self.features == "tactical_safety":
            planes = safety_planes(planes)
        else:
            planes = planes.float()
        if self.torso == "conv":
            return self.actor(self.actor_conv(planes)), self.critic(self.critic_conv(planes)).squeeze(-1)
        flat = planes.reshape(planes.shape[0], -1)
        return self.actor(flat), self.critic(flat).squeeze(-1)

    @torch.no_grad()
    def act(self, planes: np.ndarray, legal: np.ndarray, generator: torch.Generator | None, greedy: bool = False) -> np.ndarray:
        """Pick one legal column per board: the most likely one when ``greedy``, else a sample."""
        logits, _ = self(torch.as_tensor(planes))
        legal_t = torch.as_tensor(legal, dtype=torch.bool)
        if not bool(legal_t.any(dim=1).all()):
            raise ValueError("a board without legal moves has no action to choose")
        logits = masked_logits(logits, legal_t)
        if greedy:
            return logits.argmax(dim=1).numpy()
        probs = torch.softmax(logits, dim=1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1).numpy()


class BatchPlayer(Protocol):
    """Anything that picks one legal column for each board of a batch (a policy or a scripted player)."""

    name: str

    def act_batch(self, planes: np.ndarray, legal: np.ndarray) -> np.ndarray: ...


class PolicyPlayer:
    """A :class:`ConnectFourNet` as a player: greedy (evaluation) or sampling (self-play, Elo games)."""

    def __init__(self, name: str, net: ConnectFourNet, seed: int = 0, greedy: bool = False):
        self.name = name
        self.net = net
        self.greedy = greedy
        self.generator = torch.Generator().manual_seed(seed)

    def act_batch(self, planes: np.ndarray, legal: np.ndarray) -> np.ndarray:
        return self.net.act(planes, legal, self.generator, greedy=self.greedy)


CHECKPOINT_KIND = "connect_four_selfplay"
# Tensors of a resumable checkpoint's run state (optimiser, pool, games, RNGs) are stored under this prefix.
RUN_STATE_PREFIX = "run"


def save_policy(stem: Path, net: ConnectFourNet, metadata: dict[str, Any], run_state: dict[str, Any] | None = None) -> Path:
    """Save the actor-critic's weights with the metadata that :func:`load_policy` checks.

    With ``run_state`` the file also contains what ``--resume`` needs: its tensors go under the
    ``run/`` prefix beside the weights, the rest into the JSON as ``state``, and ``resumable`` is true.
    """
    tensors = {key: value.detach().clone() for key, value in net.state_dict().items()}
    document = {"kind": CHECKPOINT_KIND, "env_id": GAME_ID, **net.describe(), **metadata, "resumable": run_state is not None}
    if run_state is not None:
        document["state"] = flatten_state(run_state, RUN_STATE_PREFIX, tensors)
    return save_checkpoint(stem, tensors, document)


def load_policy(stem: Path | str) -> tuple[ConnectFourNet, dict[str, Any]]:
    """Load a connect-four policy; raise CheckpointError when the file belongs to another kind or game."""
    tensors, metadata = load_checkpoint(stem)
    where = f"{Path(stem)}"
    if metadata.get("kind") != CHECKPOINT_KIND or metadata.get("env_id") != GAME_ID:
        raise CheckpointError(
            f"{where}: kind: checkpoint is for {metadata.get('kind')!r} on {metadata.get('env_id')!r}, "
            f"expected {CHECKPOINT_KIND!r} on {GAME_ID!r}"
        )
    try:
        net = ConnectFourNet(tuple(metadata["hidden_sizes"]), str(metadata["torso"]), int(metadata["channels"]), str(metadata["features"]))
        net.load_state_dict({key: value for key, value in tensors.items() if not key.startswith(RUN_STATE_PREFIX + "/")})
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{where}: metadata: missing or invalid network description ({error})") from None
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise CheckpointError(f"{where}: state: weights do not fit the connect-four network ({first})") from None
    net.eval()
    return net, metadata


class ConnectFourAgent:
    """The trained policy behind the demo: give it a board and the legal columns, get a column back.

    Example::

        agent = ConnectFourAgent.load("apps/game_ai/checkpoints/connect_four")
        column = agent.choose_move(observation["observation"], observation["action_mask"])
    """

    def __init__(self, net: ConnectFourNet, metadata: dict[str, Any] | None = None):
        self.net = net
        self.metadata = metadata or {}

    @classmethod
    def load(cls, path: Path | str) -> "ConnectFourAgent":
        """Load a checkpoint written by the ``connect_four_selfplay`` kind (stem, .json or .safetensors)."""
        net, metadata = load_policy(path)
        return cls(net, metadata)

    def action_probabilities(self, board_planes: np.ndarray, legal_mask: np.ndarray) -> np.ndarray:
        """Return the policy's probability for each of the 7 columns (0 for full columns)."""
        planes, legal = _check_inputs(board_planes, legal_mask)
        with torch.no_grad():
            logits, _ = self.net(torch.as_tensor(planes[None]))
            probs = torch.softmax(masked_logits(logits, torch.as_tensor(legal[None])), dim=1)
        return probs[0].numpy()

    def choose_move(self, board_planes: np.ndarray, legal_mask: np.ndarray) -> int:
        """Return the most likely legal column for the player to move.

        ``board_planes`` is PettingZoo's ``(6, 7, 2)`` observation of the player to move (plane 0:
        its own tokens) and ``legal_mask`` its 7-entry ``action_mask``. Raises ValueError on other
        shapes or when no column is legal.
        """
        return int(np.argmax(self.action_probabilities(board_planes, legal_mask)))


def _check_inputs(board_planes: np.ndarray, legal_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    planes = pettingzoo_planes(board_planes)
    legal = np.asarray(legal_mask).astype(bool)
    if legal.shape != (COLUMNS,):
        raise ValueError(f"expected a legal-move mask of shape (7,), got {legal.shape}")
    if not legal.any():
        raise ValueError("the legal-move mask has no legal column; the game is over")
    return planes, legal


MoveFn = Callable[[np.ndarray, np.ndarray], int]


def play_pettingzoo_game(env: Any, first: MoveFn, second: MoveFn, seed: int) -> tuple[float, int]:
    """Play one game of PettingZoo's ``connect_four_v3`` AEC ``env``; return (player_0's reward, plies).

    ``first`` plays as player_0 and ``second`` as player_1; each gets PettingZoo's ``(6, 7, 2)``
    observation and ``action_mask`` and returns a column. An illegal column would end the game
    with -1 for the mover (the env's TerminateIllegalWrapper), so it shows up as a loss.
    """
    env.reset(seed=seed)
    movers = {"player_0": first, "player_1": second}
    final_rewards = {"player_0": 0.0, "player_1": 0.0}
    plies = 0
    for agent in env.agent_iter():
        observation, reward, termination, truncation, _ = env.last()
        if termination or truncation:
            final_rewards[agent] = float(reward)
            env.step(None)
            continue
        env.step(int(movers[agent](observation["observation"], observation["action_mask"])))
        plies += 1
    return final_rewards["player_0"], plies


def make_pettingzoo_env() -> Any:
    """Build PettingZoo's ``connect_four_v3`` AEC env with its standard wrappers, through its registry."""
    import pettingzoo

    return pettingzoo.make("aec", "classic/connect_four-v3")
