"""Data-parallel training under ``torchrun``: process group, per-rank seeds and budget, rank-0 output.

``torchrun --nproc-per-node K -m shared.cli run SCENARIO --distributed`` starts K processes. Each
rank steps the scenario's ``env.num_envs`` envs with its own seeds and collects ``ceil(budget / K)``
environment steps, and the agents average their gradients across ranks
(``Agent.average_gradients``) before every optimiser step. So each update sees K times the batch of
a single-process update, and a run with the same budget makes K times fewer updates: the usual
data-parallel scaling. Rank 0 broadcasts the initial weights, so all
ranks have the same parameters from the first update on. Only rank 0 logs, writes checkpoints and
evaluates, and the other ranks write nothing.

When every rank runs on one x86 host, the gradient all-reduce goes through shared memory
(:mod:`shared.shared_memory_allreduce`) instead of gloo, because gloo's per-call latency is several
times a minibatch update. Set ``SCENARIOLAB_ALLREDUCE=gloo`` to keep gloo for every collective.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from shared import shared_memory_allreduce
from shared.errors import ScenarioError, located
from shared.logging import MetricLogger
from shared.training import Trainer

if TYPE_CHECKING:
    from shared.agents.base import Agent
    from shared.scenario import LoadedScenario

logger = logging.getLogger("scenariolab.distributed")

RANK_SEED_OFFSET = 1_000_000  # rank r seeds its envs and RNGs with seed + r * RANK_SEED_OFFSET
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
PROCESS_GROUP_TIMEOUT = timedelta(minutes=30)
ALLREDUCE_VARIABLE = "SCENARIOLAB_ALLREDUCE"  # "gloo" turns the shared-memory all-reduce off


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the process group."""

    rank: int
    world_size: int
    local_rank: int
    backend: str
    allreduce: str  # "shared_memory" or the backend's name

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_context: DistributedContext | None = None
_shared_memory: shared_memory_allreduce.SharedMemoryAllReduce | None = None


def init_distributed(device: str = "cpu") -> DistributedContext:
    """Join the process group described by torchrun's environment variables.

    The backend is NCCL when the scenario's device is a CUDA device and one is present, else gloo.
    Raises ScenarioError when the process was not started by torchrun.
    NOTE: only the gloo (CPU) path has been run; the NCCL path is untested.
    """
    global _context, _shared_memory
    allreduce_choice = os.environ.get(ALLREDUCE_VARIABLE, "")
    if allreduce_choice not in ("", "gloo"):
        raise ScenarioError(located(None, ALLREDUCE_VARIABLE, f"invalid value {allreduce_choice!r}; set it to 'gloo' or leave it unset"))
    missing = [name for name in TORCHRUN_VARIABLES if name not in os.environ]
    if missing:
        raise ScenarioError(located(None, "--distributed", f"{', '.join(missing)} not set; launch with `torchrun --nproc-per-node K -m shared.cli run SCENARIO --distributed`"))
    local_rank = int(os.environ["LOCAL_RANK"])
    use_cuda = device != "cpu" and torch.cuda.is_available()
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=PROCESS_GROUP_TIMEOUT)
    rank, world_size = dist.get_rank(), dist.get_world_size()
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    allreduce = backend
    if backend == "gloo" and allreduce_choice != "gloo" and shared_memory_allreduce.supported(world_size, local_world_size):
        _shared_memory = shared_memory_allreduce.SharedMemoryAllReduce(rank, world_size, timeout_seconds=PROCESS_GROUP_TIMEOUT.total_seconds())
        allreduce = "shared_memory"
    _context = DistributedContext(rank, world_size, local_rank, backend, allreduce)
    if not _context.is_main:
        logging.getLogger("scenariolab").setLevel(logging.WARNING)
    logger.info("process group: %d ranks, backend %s, all-reduce through %s", world_size, backend, allreduce)
    return _context


def all_reduce_sum(tensor: torch.Tensor) -> None:
    """Sum ``tensor`` over all ranks in place, through shared memory where :func:`init_distributed` set it up."""
    if _shared_memory is not None:
        _shared_memory.all_reduce(tensor)
    else:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)


def current_context() -> DistributedContext | None:
    """Return the context set by :func:`init_distributed`, or None in a single process."""
    return _context


def shutdown() -> None:
    """Leave the process group (call once training and evaluation are over)."""
    global _context, _shared_memory
    if _shared_memory is not None:
        _shared_memory.close()
        _shared_memory = None
    if dist.is_initialized():
        dist.destroy_process_group()
    _context = None


def rank_seed(seed: int, rank: int) -> int:
    """Return rank ``rank``'s seed, far enough from the others' that their env seeds never overlap."""
    return seed + rank * RANK_SEED_OFFSET


def rank_budget(total_steps: int, world_size: int) -> int:
    """Return each rank's share of the step budget.

    Every rank gets the same share (rounded up), because an unequal number of training iterations
    would leave one rank waiting forever in the gradient all-reduce. The total may exceed the
    budget by at most ``world_size - 1`` steps, plus the overshoot of the last iteration that a
    single process also has.
    """
    return math.ceil(total_steps / world_size)


def broadcast_agent(agent: "Agent") -> None:
    """Copy rank 0's parameters and buffers to every rank, so all ranks start from the same weights."""
    # Limitation: observation and reward normalisation statistics are module buffers that each rank
    # then updates from its own envs. They are not averaged, and rank 0's are saved in checkpoints.
    for module in agent.modules().values():
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src=0)


class WorldMetricLogger(MetricLogger):
    """Rank 0's logger: counts ``global_step`` and ``charts/SPS`` across all ranks.

    Ranks step in lockstep (each update waits for the all-reduce), so rank 0's step count times
    the world size is the total number of environment steps.
    """

    def __init__(self, run_path: Path | str, world_size: int, tensorboard: bool = True) -> None:
        super().__init__(run_path, tensorboard)
        self.world_size = world_size

    def log(self, global_step: int, values: dict[str, Any]) -> None:
        scaled = dict(values)
        if "charts/SPS" in scaled:
            scaled["charts/SPS"] = float(scaled["charts/SPS"]) * self.world_size
        super().log(global_step * self.world_size, scaled)


class NullMetricLogger(MetricLogger):
    """The logger of ranks other than 0: accepts every call and writes nothing."""

    def __init__(self) -> None:  # no file and no TensorBoard writer
        pass

    def log(self, global_step: int, values: dict[str, Any]) -> None:
        return None

    def close(self) -> None:
        return None


class SilentTrainer(Trainer):
    """The trainer of ranks other than 0: trains and all-reduces like rank 0 but saves no checkpoint."""

    def save(self, name: str, include_run_state: bool = True) -> Path:
        return self.checkpoint_dir / name
