"""Checkpoints: tensors in safetensors, everything else in JSON, both written atomically.

Loading never unpickles anything: ``safetensors`` stores raw tensors and the JSON side stores plain
numbers, strings, lists and mappings. The JSON records the SHA-256 of its safetensors file, so a pair
torn by a crash between the two renames, or a file edited by hand, is reported instead of loaded.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from shared.errors import CheckpointError
from shared.rundir import atomic_write_bytes, atomic_write_json

if TYPE_CHECKING:
    from shared.agents.base import Agent

FORMAT = "scenariolab-checkpoint"
VERSION = 1


def _stem(path: Path | str) -> Path:
    """Accept ``x``, ``x.json`` or ``x.safetensors`` and return the stem path ``x``."""
    path = Path(path)
    if path.suffix in (".json", ".safetensors"):
        return path.with_suffix("")
    return path


def flatten_state(state: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Move every tensor (and numpy array) in a nested structure into ``tensors``; return a JSON skeleton."""
    if isinstance(state, torch.Tensor):
        key = prefix
        tensors[key] = state.detach().cpu().contiguous().clone()
        return {"__tensor__": key}
    if isinstance(state, np.ndarray):
        key = prefix
        tensors[key] = torch.from_numpy(np.ascontiguousarray(state).copy())
        return {"__ndarray__": key}
    if isinstance(state, dict):
        if state and all(isinstance(k, int) for k in state):
            return {"__intkeys__": {str(k): flatten_state(v, f"{prefix}/{k}", tensors) for k, v in state.items()}}
        return {str(k): flatten_state(v, f"{prefix}/{k}", tensors) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return [flatten_state(v, f"{prefix}/{i}", tensors) for i, v in enumerate(state)]
    if isinstance(state, (np.integer, np.floating, np.bool_)):
        return state.item()
    if state is None or isinstance(state, (bool, int, float, str)):
        return state
    raise TypeError(f"cannot store {type(state).__name__} at {prefix} in a checkpoint")


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Invert :func:`flatten_state`."""
    if isinstance(skeleton, dict):
        if set(skeleton) == {"__tensor__"}:
            return tensors[skeleton["__tensor__"]]
        if set(skeleton) == {"__ndarray__"}:
            return tensors[skeleton["__ndarray__"]].numpy()
        if set(skeleton) == {"__intkeys__"}:
            return {int(k): unflatten_state(v, tensors) for k, v in skeleton["__intkeys__"].items()}
        return {k: unflatten_state(v, tensors) for k, v in skeleton.items()}
    if isinstance(skeleton, list):
        return [unflatten_state(v, tensors) for v in skeleton]
    return skeleton


def save_checkpoint(stem: Path | str, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> Path:
    """Write ``stem.safetensors`` and ``stem.json`` atomically; return the stem."""
    stem = _stem(stem)
    payload = save_safetensors_bytes(tensors) if tensors else save_safetensors_bytes({"__empty__": torch.zeros(0)})
    digest = hashlib.sha256(payload).hexdigest()
    document = {"format": FORMAT, "version": VERSION, "sha256": digest, **metadata}
    atomic_write_bytes(stem.with_suffix(".safetensors"), payload)
    atomic_write_json(stem.with_suffix(".json"), document)
    return stem


def load_checkpoint(stem: Path | str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint pair; raise CheckpointError when a file is missing, corrupt or torn."""
    stem = _stem(stem)
    json_path = stem.with_suffix(".json")
    weights_path = stem.with_suffix(".safetensors")
    for path in (json_path, weights_path):
        if not path.exists():
            raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        metadata = json.loads(json_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{json_path}: corrupt checkpoint metadata ({error.__class__.__name__}); use another checkpoint") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise CheckpointError(f"{json_path}: format: not a ScenarioLab checkpoint (expected format {FORMAT!r})")
    payload = weights_path.read_bytes()
    if hashlib.sha256(payload).hexdigest() != metadata.get("sha256"):
        raise CheckpointError(f"{weights_path}: corrupt checkpoint: its SHA-256 does not match {json_path.name}")
    try:
        tensors = load_safetensors_bytes(payload)
    except (SafetensorError, ValueError) as error:
        raise CheckpointError(f"{weights_path}: corrupt checkpoint weights ({error})") from None
    tensors.pop("__empty__", None)
    return tensors, metadata


def load_run_checkpoint(stem: Path | str, scenario: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load a training ``latest`` checkpoint for ``--resume``; return its run state and metadata.

    Raises CheckpointError when the file is missing, holds weights only, or was written by
    another scenario.
    """
    stem = Path(stem)
    where = f"{stem}.json"
    if not stem.with_suffix(".json").exists():
        raise CheckpointError(f"{where}: --resume: no latest checkpoint in this run folder")
    tensors, metadata = load_checkpoint(stem)
    if not metadata.get("resumable") or "state" not in metadata:
        raise CheckpointError(f"{where}: resumable: this checkpoint contains weights only; resume needs a latest checkpoint written by training")
    if metadata.get("scenario") != scenario:
        raise CheckpointError(f"{where}: scenario: the checkpoint is from {metadata.get('scenario')!r}, not {scenario!r}")
    try:
        return unflatten_state(metadata["state"], tensors), metadata
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{where}: state: the run state does not fit this scenario ({str(error).splitlines()[0]})") from None


def agent_state(agent: "Agent") -> dict[str, Any]:
    """Collect an agent's networks, optimisers, counters and buffers into one nested structure."""
    return {
        "modules": {name: module.state_dict() for name, module in agent.modules().items()},
        "optimizers": {name: opt.state_dict() for name, opt in agent.optimizers().items()},
        "extra": agent.extra_state(),
        "buffers": agent.buffers_state(),
    }


def save_agent(agent: "Agent", stem: Path | str, metadata: dict[str, Any] | None = None, include_buffers: bool = True) -> Path:
    """Save an agent with its optimiser state; ``metadata`` adds run information such as global_step."""
    state = agent_state(agent)
    if not include_buffers:
        state["buffers"] = {}
    tensors: dict[str, torch.Tensor] = {}
    skeleton = flatten_state(state, "agent", tensors)
    shapes = {
        name: {key: list(value.shape) for key, value in module.state_dict().items()}
        for name, module in agent.modules().items()
    }
    document = {
        "agent": agent.name,
        "agent_config": agent.config.model_dump(mode="json"),
        "observation_shape": list(getattr(agent.observation_space, "shape", None) or []),
        "action_space": repr(agent.action_space),
        "module_shapes": shapes,
        **(metadata or {}),
        "state": skeleton,
    }
    return save_checkpoint(stem, tensors, document)


def load_agent(agent: "Agent", stem: Path | str, weights_only: bool = False) -> dict[str, Any]:
    """Load a checkpoint into ``agent``; raise CheckpointError when it belongs to another agent or env.

    With ``weights_only`` only the networks are restored (evaluation); otherwise optimisers,
    counters and buffers too (resume). Returns the checkpoint's metadata.
    """
    stem = _stem(stem)
    tensors, metadata = load_checkpoint(stem)
    where = str(stem.with_suffix(".json"))
    if metadata.get("agent") != agent.name:
        raise CheckpointError(f"{where}: agent: checkpoint is for {metadata.get('agent')!r}, but the scenario uses {agent.name!r}")
    expected_shapes = {
        name: {key: list(value.shape) for key, value in module.state_dict().items()}
        for name, module in agent.modules().items()
    }
    if metadata.get("module_shapes") != expected_shapes:
        raise CheckpointError(
            f"{where}: module_shapes: the checkpoint's networks do not match this scenario's env and agent config "
            f"(observation shape {metadata.get('observation_shape')}, action space {metadata.get('action_space')})"
        )
    try:
        state = unflatten_state(metadata["state"], tensors)
        if "agent" in state:  # a training checkpoint nests the agent beside the collector and RNG states
            state = state["agent"]
        for name, module in agent.modules().items():
            module.load_state_dict(state["modules"][name])
        if not weights_only:
            for name, optimizer in agent.optimizers().items():
                optimizer.load_state_dict(state["optimizers"][name])
            agent.load_extra_state(state["extra"])
            if state.get("buffers"):
                agent.load_buffers_state(state["buffers"])
    except (KeyError, RuntimeError, ValueError) as error:
        raise CheckpointError(f"{where}: state: checkpoint does not fit this agent ({error})") from None
    return metadata
