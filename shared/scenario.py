"""Scenario files: pydantic models, YAML loading with ``extends``, ``--set`` overrides and validation.

A scenario is one YAML file that names the environment to build, which agent to train on it, how
many steps each budget allows, and how to evaluate the result. Validation happens in two stages:
the common fields here, then the agent's own ``Config`` model and the kind's ``settings`` model.
Every failure becomes a :class:`ScenarioError` whose message names the file, the dotted field path
and what is allowed.
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shared.errors import ScenarioError, located

BUDGETS = ("smoke", "default", "full")
DOMAINS = ("classic", "game_ai", "driving", "recommendation", "suite")


class StrictModel(BaseModel):
    """Base model that rejects unknown keys, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class EnvSpec(StrictModel):
    """The environment: a registered id, its keyword arguments and how many copies to step at once."""

    id: str
    num_envs: int = Field(1, ge=1, le=1024)
    config: dict[str, Any] = Field(default_factory=dict)
    max_episode_steps: int | None = Field(None, ge=1)
    vectorization: Literal["sync", "async", "native"] = "sync"


class Budget(StrictModel):
    """Training steps (environment steps across all envs) for each budget level."""

    smoke: int = Field(ge=0)
    default: int = Field(ge=0)
    full: int = Field(ge=0)


class EvaluationSpec(StrictModel):
    """Final-evaluation settings: ``episodes`` on each of ``seeds``, plus a random baseline."""

    episodes: int = Field(10, ge=1)
    seeds: list[int] = Field(default_factory=lambda: [10_000, 10_001, 10_002], min_length=1)
    deterministic: bool = True
    random_baseline: bool = True
    interval: int = Field(0, ge=0, description="Environment steps between evaluations during training; 0 turns them off.")
    interval_episodes: int = Field(5, ge=1)
    bootstrap_samples: int = Field(2000, ge=100)


class CheckpointSpec(StrictModel):
    """When checkpoints are written; ``latest`` is always written at the end and on Ctrl-C."""

    interval: int = Field(0, ge=0, description="Environment steps between latest-checkpoint saves; 0 saves only at the end.")
    save_replay_buffer: bool = True


class LoggingSpec(StrictModel):
    """Logging settings for outputs besides ``metrics.jsonl``."""

    tensorboard: bool = True
    interval: int = Field(1, ge=1, description="Log every N training iterations.")


class Scenario(StrictModel):
    """One scenario file after validation of the common fields."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    domain: Literal["classic", "game_ai", "driving", "recommendation", "suite"]
    kind: str = "gym"
    env: EnvSpec | None = None
    agent: dict[str, Any] = Field(default_factory=dict)
    budget: Budget = Field(default_factory=lambda: Budget(smoke=0, default=0, full=0))
    train: bool = True
    checkpoint_path: str | None = Field(None, description="A shipped checkpoint, relative to the scenario file: what `eval` and `train: false` use.")
    warm_start: bool = Field(False, description="Start training from checkpoint_path's weights instead of from scratch.")
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    perturb: dict[str, float] = Field(default_factory=dict)
    seed: int = Field(0, ge=0)
    compile: bool = False
    device: str = "cpu"
    deterministic_torch: bool = True
    torch_threads: int | None = Field(None, ge=0, description="Torch CPU threads; None picks 1 for flat observations and all cores for images.")
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    logging: LoggingSpec = Field(default_factory=LoggingSpec)
    settings: dict[str, Any] = Field(default_factory=dict)

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if value != "cpu" and not value.startswith("cuda") and value != "auto":
            raise ValueError("must be 'cpu', 'cuda', 'cuda:N' or 'auto'")
        return value

    def steps_for(self, budget: str) -> int:
        """Return the training steps of the named budget level."""
        return int(getattr(self.budget, budget))


class LoadedScenario:
    """A validated scenario together with the file it came from and its raw mapping."""

    def __init__(self, scenario: Scenario, source: Path, raw: dict[str, Any], agent_config: Any, settings: Any):
        self.scenario = scenario
        self.source = source
        self.raw = raw
        self.agent_config = agent_config
        self.settings = settings

    @property
    def name(self) -> str:
        return self.scenario.name

    def resolve_path(self, relative: str) -> Path:
        """Resolve a path written in the scenario relative to the scenario file's folder."""
        path = Path(relative)
        return path if path.is_absolute() else (self.source.parent / path).resolve()

    def to_yaml(self) -> str:
        """Serialise the resolved scenario (overrides applied) for the run folder."""
        return yaml.safe_dump(self.raw, sort_keys=False, allow_unicode=True)


# ---------------------------------------------------------------------------------------------
# Finding and reading files


def scenario_roots() -> list[Path]:
    """Folders searched for scenario names: ``./scenarios`` and the one beside the installed package."""
    roots = [Path.cwd() / "scenarios", Path(__file__).resolve().parents[1] / "scenarios"]
    unique: list[Path] = []
    for root in roots:
        if root.is_dir() and root.resolve() not in [r.resolve() for r in unique]:
            unique.append(root)
    return unique


def find_scenario_files() -> list[Path]:
    """Return every scenario file under the scenario roots, skipping shared-default files."""
    files: dict[str, Path] = {}
    for root in scenario_roots():
        for path in sorted(root.rglob("*.yaml")):
            if "defaults" in path.relative_to(root).parts:
                continue
            files.setdefault(str(path.relative_to(root)), path)
    return list(files.values())


def resolve_scenario_path(name_or_path: str) -> Path:
    """Turn a path or a scenario name (the file stem, as ``scenariolab list`` shows it) into a path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists() or "/" in name_or_path:
        if not path.exists():
            raise ScenarioError(located(name_or_path, None, "file not found"))
        return path
    candidates = {p.stem: p for p in find_scenario_files()}
    if name_or_path in candidates:
        return candidates[name_or_path]
    nearest = difflib.get_close_matches(name_or_path, list(candidates), n=1)
    hint = f" Did you mean {nearest[0]!r}?" if nearest else " Run `scenariolab list` to see them."
    raise ScenarioError(located(name_or_path, None, f"no scenario file or name matches.{hint}"))


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """Read a YAML file that must contain a mapping, turning every failure into one ScenarioError line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(located(str(path), None, "file not found")) from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as error:
        raise ScenarioError(located(str(path), None, f"cannot read the file ({error.__class__.__name__})")) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else None
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ScenarioError(located(str(path), where, f"invalid YAML: {problem}")) from None
    if not isinstance(data, dict):
        raise ScenarioError(located(str(path), None, f"expected a mapping of scenario fields, got {type(data).__name__}"))
    return data


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Merge ``override`` into a copy of ``base``; nested mappings merge, other values replace."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def read_with_extends(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a scenario and the chain of shared-default files it names under ``extends``."""
    data = read_yaml_mapping(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise ScenarioError(located(str(path), "extends", "must be a path to another YAML file"))
    parent_path = (path.parent / parent).resolve()
    if parent_path in seen:
        raise ScenarioError(located(str(path), "extends", f"circular chain through {parent_path}"))
    if not parent_path.exists():
        raise ScenarioError(located(str(path), "extends", f"file not found: {parent}"))
    return deep_merge(read_with_extends(parent_path, (*seen, path.resolve())), data)


# ---------------------------------------------------------------------------------------------
# Overrides


def parse_override(text: str, source: str) -> tuple[list[str], Any]:
    """Split ``key.path=value`` and parse the value as YAML, so ``3e-4``, ``true`` and ``[1, 2]`` get types."""
    if "=" not in text:
        raise ScenarioError(located(source, "--set", f"expected key=value, got {text!r}"))
    key, _, value_text = text.partition("=")
    keys = [part for part in key.strip().split(".")]
    if not key.strip() or any(not part for part in keys):
        raise ScenarioError(located(source, "--set", f"invalid key path {key!r}"))
    try:
        value = yaml.safe_load(value_text) if value_text.strip() else ""
    except yaml.YAMLError:
        value = value_text
    return keys, value


def apply_override(raw: dict[str, Any], keys: list[str], value: Any, source: str) -> None:
    """Set ``raw[k1][k2]...`` to ``value``; intermediate mappings are created where missing."""
    node = raw
    for index, key in enumerate(keys[:-1]):
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            path = ".".join(keys[: index + 1])
            raise ScenarioError(located(source, ".".join(keys), f"{path} is a {type(child).__name__}, not a mapping"))
        node = child
    node[keys[-1]] = value


# ---------------------------------------------------------------------------------------------
# Validation


def describe_validation_error(error: ValidationError, source: str, prefix: str = "", model: type[BaseModel] | None = None) -> list[str]:
    """Turn pydantic errors into lines ``file: field.path: what is allowed``, suggesting keys for typos."""
    lines = []
    for item in error.errors():
        loc = [str(part) for part in item["loc"]]
        field = ".".join(([prefix] if prefix else []) + loc)
        if item["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, item["loc"][:-1]) if model else []
            nearest = difflib.get_close_matches(loc[-1], allowed, n=1)
            hint = f" Did you mean {nearest[0]!r}?" if nearest else ""
            shown = f" Allowed keys: {', '.join(allowed)}." if allowed else ""
            lines.append(located(source, field, f"unknown key.{hint}{shown}"))
        elif item["type"] == "missing":
            lines.append(located(source, field, "required field is missing"))
        else:
            value = item.get("input")
            shown_value = repr(value) if not isinstance(value, dict) else "a mapping"
            lines.append(located(source, field, f"{item['msg']} (got {shown_value})"))
    return lines


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Walk ``model`` along ``loc`` and return the field names allowed at that level."""
    current: Any = model
    for part in loc:
        fields = getattr(current, "model_fields", None)
        if fields is None or part not in fields:
            return []
        annotation = fields[part].annotation
        current = _model_in(annotation)
        if current is None:
            return []
    return list(getattr(current, "model_fields", {}))


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in getattr(annotation, "__args__", ()) or ():
        found = _model_in(argument)
        if found is not None:
            return found
    return None


def validate_raw(raw: dict[str, Any], source: str) -> tuple[LoadedScenario | None, list[str]]:
    """Validate a raw mapping fully (common fields, agent, kind settings); return it or the error lines."""
    from shared.agents import agent_names, get_agent_class
    from shared.registry import get_kind

    try:
        scenario = Scenario.model_validate(raw)
    except ValidationError as error:
        return None, describe_validation_error(error, source, model=Scenario)

    errors: list[str] = []
    try:
        kind = get_kind(scenario.kind, source)
    except ScenarioError as error:
        return None, [str(error)]

    agent_config = None
    if kind.needs_agent:
        name = scenario.agent.get("name")
        if name is None:
            errors.append(located(source, "agent.name", f"required field is missing; allowed: {', '.join(agent_names())}"))
        else:
            try:
                agent_class = get_agent_class(str(name), source)
            except ScenarioError as error:
                errors.append(str(error))
            else:
                config_data = {k: v for k, v in scenario.agent.items() if k != "name"}
                try:
                    agent_config = agent_class.Config.model_validate(config_data)
                except ValidationError as error:
                    errors.extend(describe_validation_error(error, source, "agent", agent_class.Config))

    settings = None
    if kind.settings_model is not None:
        try:
            settings = kind.settings_model.model_validate(scenario.settings)
        except ValidationError as error:
            errors.extend(describe_validation_error(error, source, "settings", kind.settings_model))
    elif scenario.settings:
        errors.append(located(source, "settings", f"kind {scenario.kind!r} takes no settings"))

    if errors:
        return None, errors
    loaded = LoadedScenario(scenario, Path(source), raw, agent_config, settings)
    try:
        kind.validate(loaded)
    except ScenarioError as error:
        return None, [str(error)]
    return loaded, []


def load_scenario(name_or_path: str, overrides: list[str] | None = None, budget: str | None = None) -> LoadedScenario:
    """Load, extend, override and validate a scenario; raise one ScenarioError line on the first problem."""
    path = resolve_scenario_path(name_or_path)
    raw = read_with_extends(path)
    source = str(path)
    for text in overrides or []:
        keys, value = parse_override(text, source)
        apply_override(raw, keys, value, source)
    loaded, errors = validate_raw(raw, source)
    if errors:
        more = f" (and {len(errors) - 1} more; run `scenariolab validate {source}`)" if len(errors) > 1 else ""
        raise ScenarioError(errors[0] + more)
    assert loaded is not None
    if budget is not None and budget not in BUDGETS:
        raise ScenarioError(located(source, "--budget", f"unknown budget {budget!r}; allowed: {', '.join(BUDGETS)}"))
    return loaded
