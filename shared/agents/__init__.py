"""The shared agents, by the name scenario files use under ``agent.name``.

| agent      | discrete | continuous | vector envs | cost signal | paper |
|------------|----------|------------|-------------|-------------|-------|
| reinforce  | yes      | yes        | yes         | no          | Williams 1992 |
| dqn        | yes      | no         | yes         | no          | Mnih et al. 2015; van Hasselt et al. 2016 (double_q) |
| a2c        | yes      | yes        | yes         | no          | Mnih et al. 2016 |
| ppo        | yes      | yes        | yes         | no          | Schulman et al. 2017 |
| ppo_lagrangian | yes  | yes        | yes         | yes         | Ray et al. 2019 |
"""

from __future__ import annotations

import importlib
import importlib.util

from shared.agents.base import Agent, AgentConfig, Capabilities
from shared.errors import ScenarioError
from shared.registry import unknown_choice

# Agent name -> module; modules are imported on first use so the CLI starts quickly.
_AGENT_MODULES = {
    "reinforce": ("shared.agents.reinforce", "Reinforce"),
    "dqn": ("shared.agents.dqn", "DQN"),
    "a2c": ("shared.agents.a2c", "A2C"),
    "ppo": ("shared.agents.ppo", "PPO"),
    "ppo_lagrangian": ("shared.agents.ppo_lagrangian", "PPOLagrangian"),
}


def agent_names() -> list[str]:
    """Return the names of the agents whose module is present."""
    names = []
    for name, (module, _) in _AGENT_MODULES.items():
        if importlib.util.find_spec(module) is not None:
            names.append(name)
    return names


def get_agent_class(name: str, source: str | None = None) -> type[Agent]:
    """Return the agent class registered as ``name``; raise ScenarioError with a suggestion otherwise."""
    if name not in agent_names():
        raise ScenarioError(unknown_choice(source, "agent.name", name, agent_names()))
    module_name, class_name = _AGENT_MODULES[name]
    return getattr(importlib.import_module(module_name), class_name)


__all__ = ["Agent", "AgentConfig", "Capabilities", "agent_names", "get_agent_class"]
