"""The recommendation pipeline: data, candidates, item encoder, simulator, RL re-ranker, evaluation.

Each stage reuses a shipped artefact from ``apps/recommendation/checkpoints`` when the artefact's
recorded split signature and settings match the current run, and trains otherwise (budget ``full``
always trains). The stages are plain functions so the scenario kind, the demo and the tests share them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from apps.recommendation.candidates import MODEL_NAMES, CandidateSet, CandidateSettings, train_base_model
from apps.recommendation.data import DataSpec, SplitDataset, load_dataset
from apps.recommendation.encoder import EncoderSettings, finetune_lora, item_embeddings
from apps.recommendation.metrics import held_out_ndcg, ranking_metrics
from apps.recommendation.reranker import Reranker, RerankerSettings, RerankPolicy, TrainResult, load_policy, policy_state, to_tensors, train_ppo, train_reinforce_topk, validation_ndcg
from apps.recommendation.simulator import PreferenceModel, PreferenceSettings, RecommendationSessionEnv, SimulatorSettings, SimulatorWorld, scores_from_order, user_profiles
from shared.checkpoints import load_checkpoint, save_checkpoint
from shared.errors import CheckpointError
from shared.stats import bootstrap_ci

logger = logging.getLogger("scenariolab.apps.recommendation.pipeline")

SHIPPED_DIR = Path(__file__).resolve().parent / "checkpoints"
RANKERS = ("base", "random", "text_similarity", "reinforce_topk", "ppo")
OFFLINE_METRICS = ("ndcg@10", "recall@10", "mrr@10", "hit@10", "coverage@10", "ild@10", "novelty@10")
ONLINE_METRICS = ("sim_ctr", "sim_return_mean", "sim_session_length_mean")


class SmokeSettings(BaseModel):
    """Reductions under the ``smoke`` budget: a slice of users and one epoch per base model."""

    model_config = ConfigDict(extra="forbid")

    max_users: int = Field(60, ge=3)
    base_model_epochs: int = Field(1, ge=1)
    preference_epochs: int = Field(10, ge=1)
    sessions_per_seed: int = Field(20, ge=1)


class RecommendationSettings(BaseModel):
    """The ``settings:`` mapping of a ``recommendation`` scenario."""

    model_config = ConfigDict(extra="forbid")

    data: DataSpec = Field(default_factory=DataSpec)
    candidates: CandidateSettings = Field(default_factory=CandidateSettings)
    encoder: EncoderSettings = Field(default_factory=EncoderSettings)
    preference: PreferenceSettings = Field(default_factory=PreferenceSettings)
    simulator: SimulatorSettings = Field(default_factory=SimulatorSettings)
    reranker: RerankerSettings = Field(default_factory=RerankerSettings)
    use_shipped: bool = Field(True, description="Reuse matching artefacts from apps/recommendation/checkpoints instead of training (budget full always trains).")
    artefact_dir: str | None = Field(None, description="Folder of shipped artefacts; None: apps/recommendation/checkpoints.")
    smoke: SmokeSettings = Field(default_factory=SmokeSettings)


@dataclass
class Stage:
    """Outcome of one pipeline stage: its origin (``shipped``, ``trained``, ``cache``...), time and details."""

    origin: str
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class PipelineState:
    """Everything the later stages and the demo read."""

    data: SplitDataset
    embeddings: np.ndarray
    candidates: dict[str, CandidateSet]
    preference: PreferenceModel
    settings: RecommendationSettings
    stages: dict[str, Stage]
    policies: dict[str, RerankPolicy] = field(default_factory=dict)

    @property
    def base(self) -> CandidateSet:
        return self.candidates[self.settings.candidates.base_model]

    def world(self, users: np.ndarray | None = None) -> SimulatorWorld:
        """Return the simulator's view; sessions draw users with a training history by default."""
        histories = self.data.train_histories()
        pool = users if users is not None else np.array([u for u in range(self.data.num_users) if len(histories[u])], dtype=np.int64)
        return SimulatorWorld(self.embeddings, self.base.items, self.base.scores, histories, self.preference, pool, self.data.item_title)

    def make_env(self, users: np.ndarray | None = None) -> RecommendationSessionEnv:
        return RecommendationSessionEnv(self.world(users), self.settings.simulator)


def _shipped_stem(settings: RecommendationSettings, name: str, base: Path | None) -> Path:
    folder = Path(settings.artefact_dir) if settings.artefact_dir else SHIPPED_DIR
    if settings.artefact_dir and base is not None and not folder.is_absolute():
        folder = (base / folder).resolve()
    return folder / name


def _matching(stem: Path, signature: str, expected: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """Load an artefact when it exists and its metadata matches the split and settings, else None."""
    if not stem.with_suffix(".safetensors").is_file():
        return None
    try:
        tensors, metadata = load_checkpoint(stem)
    except CheckpointError as error:
        logger.warning("ignoring unreadable artefact %s: %s", stem, error)
        return None
    if metadata.get("split_signature") != signature:
        return None
    for key, value in expected.items():
        if metadata.get(key) != value:
            logger.info("artefact %s was made with different %s; training again", stem.name, key)
            return None
    return tensors, metadata


def effective_settings(settings: RecommendationSettings, budget: str) -> RecommendationSettings:
    """Apply the smoke budget's slice to a copy of the settings."""
    if budget != "smoke":
        return settings
    smoke = settings.smoke
    copy = settings.model_copy(deep=True)
    copy.data.max_users = min(copy.data.max_users or smoke.max_users, smoke.max_users)
    copy.candidates.bpr.epochs = smoke.base_model_epochs
    copy.candidates.sasrec.epochs = smoke.base_model_epochs
    copy.preference.epochs = smoke.preference_epochs
    copy.reranker.sessions_per_iteration = min(copy.reranker.sessions_per_iteration, 8)
    return copy


def prepare(settings: RecommendationSettings, base: Path | None, seed: int, budget: str = "default", progress: bool = False, out_dir: Path | None = None) -> PipelineState:
    """Run the stages up to the simulator: data, embeddings, both base models, the preference model."""
    stages: dict[str, Stage] = {}
    reuse = settings.use_shipped and budget != "full"

    start = time.perf_counter()
    data = load_dataset(settings.data, base, need_text=True)
    stages["data"] = Stage("loaded", time.perf_counter() - start, {"users": data.num_users, "items": data.num_items, "train_interactions": len(data.train), "users_without_test": int(np.sum(data.test_item < 0))})
    signature = data.split_signature()

    cache_dir = Path(settings.encoder.cache_dir) if settings.encoder.cache_dir else None
    if cache_dir is not None and base is not None and not cache_dir.is_absolute():
        cache_dir = (base / cache_dir).resolve()
    result = item_embeddings(data.item_text, data.text_hash, data.name, settings.encoder, cache_dir, None, progress)
    stages["encoder"] = Stage("cache" if result.from_cache else "encoded", 0.0 if result.from_cache else result.encode_seconds, {"cache": str(result.cache_path), "items": data.num_items, "encode_seconds": result.encode_seconds})
    embeddings = result.vectors
    if settings.encoder.lora.enabled:
        adapter = Path(settings.encoder.lora.adapter_dir) if settings.encoder.lora.adapter_dir else (out_dir or Path.cwd()) / "lora_adapter"
        lora_start = time.perf_counter()
        losses = finetune_lora(data.item_text, data.train_histories(), settings.encoder, adapter, seed, progress)
        tuned = item_embeddings(data.item_text, data.text_hash, data.name, settings.encoder, cache_dir, adapter, progress)
        # Limitation: "improved" is judged by the text-similarity ranker's validation NDCG@10, not by
        # retraining the RL re-ranker on both embeddings, which would double the training time.
        plain_ndcg = text_similarity_validation(data, embeddings)
        tuned_ndcg = text_similarity_validation(data, tuned.vectors)
        stages["lora"] = Stage("trained", time.perf_counter() - lora_start, {**losses, "adapter": str(adapter), "text_similarity_valid_ndcg@10_before": plain_ndcg, "text_similarity_valid_ndcg@10_after": tuned_ndcg, "improved": bool(tuned_ndcg > plain_ndcg)})
        if tuned_ndcg > plain_ndcg:
            embeddings = tuned.vectors

    candidates: dict[str, CandidateSet] = {}
    for model in MODEL_NAMES:
        model_settings = getattr(settings.candidates, model)
        expected = {"settings": model_settings.model_dump(), "num_candidates": settings.candidates.num_candidates}
        found = _matching(_shipped_stem(settings, f"candidates_{model}", base), signature, expected) if reuse else None
        if found is not None and "valid_items" not in found[0]:
            logger.info("artefact candidates_%s has no validation candidates; training again", model)
            found = None
        if found is not None:
            tensors, metadata = found
            candidates[model] = CandidateSet.from_tensors(tensors, {"model": model, **metadata})
            stages[f"candidates_{model}"] = Stage("shipped", float(metadata.get("train_seconds", 0.0)))
            continue
        model_start = time.perf_counter()
        candidates[model] = train_base_model(model, data, model_settings, seed, settings.candidates.num_candidates)
        stages[f"candidates_{model}"] = Stage("trained", time.perf_counter() - model_start)

    histories = data.train_histories()
    expected = {"settings": settings.preference.model_dump(), "embedding_cache": result.cache_path.name}
    found = _matching(_shipped_stem(settings, "preference", base), signature, expected) if reuse else None
    pref_start = time.perf_counter()
    if found is not None:
        preference, _ = PreferenceModel.load(_shipped_stem(settings, "preference", base), histories, embeddings)
        origin = "shipped"
    else:
        preference = PreferenceModel.fit(data.train.user, data.train.item, data.num_users, data.num_items, histories, embeddings, settings.preference, seed)
        origin = "trained"
    test_users = data.test_users()
    auc = preference.auc(test_users, data.test_item[test_users], histories, data.num_items, seed=seed)
    stages["preference"] = Stage(origin, time.perf_counter() - pref_start, {"heldout_auc": auc})
    return PipelineState(data, embeddings, candidates, preference, settings, stages)


def text_similarity_validation(data: SplitDataset, embeddings: np.ndarray, k: int = 10, candidates: int = 100) -> float:
    """Return validation NDCG@k of ranking the whole catalogue by cosine to the user's history profile."""
    histories = data.train_histories()
    profiles = user_profiles(histories, embeddings)
    users = np.flatnonzero(data.valid_item >= 0)
    total = 0.0
    for user in users:
        scores = embeddings @ profiles[user]
        scores[histories[user]] = -np.inf
        total += held_out_ndcg(scores, int(data.valid_item[user]), k)
    return float(total / max(len(users), 1))


def validation_observations(state: PipelineState) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    """Return the session-start observations of every user with a validation item, over the base
    model's validation candidates, and the validation item's index among them (-1 when absent)."""
    base = state.base
    if base.valid_items is None or base.valid_scores is None:
        raise ValueError(f"candidate set {base.model!r} has no validation candidates; train it again (--budget full)")
    data = state.data
    users = np.flatnonzero(data.valid_item >= 0)
    world = SimulatorWorld(state.embeddings, base.valid_items, base.valid_scores, data.train_histories(), state.preference, users, data.item_title)
    env = RecommendationSessionEnv(world, state.settings.simulator)
    observations = [env.reset(seed=0, options={"user": int(user)})[0] for user in users]
    env.close()
    matches = base.valid_items[users] == data.valid_item[users, None]
    target_index = np.where(matches.any(1), matches.argmax(1), -1)
    return to_tensors(observations), target_index


def validation_scorer(state: PipelineState) -> Callable[[RerankPolicy], float]:
    """Return a function from a policy to its validation NDCG@10 (the scorer the REINFORCE trainer selects with)."""
    observations, target_index = validation_observations(state)

    def score(policy: RerankPolicy) -> float:
        return validation_ndcg(policy, observations, target_index)

    return score


# ---------------------------------------------------------------------------------------------
# Rankers


def ranker_scores(state: PipelineState, name: str, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Return (users, N) scores of the named ranker over each user's base candidates at session start."""
    base = state.base
    if name == "base":
        return base.scores[users].astype(np.float64)
    if name == "random":
        return rng.random((len(users), base.items.shape[1]))
    if name == "text_similarity":
        profiles = state.preference.profiles if state.preference.profiles.shape[0] == state.data.num_users else user_profiles(state.data.train_histories(), state.embeddings)
        return np.einsum("und,ud->un", state.embeddings[base.items[users]], profiles[users])
    policy = state.policies[name]
    env = state.make_env(users)
    rows = []
    for user in users:
        obs, _ = env.reset(seed=0, options={"user": int(user)})
        rows.append(Reranker(policy).scores(obs))
    return np.stack(rows).astype(np.float64)


def ranker_action(state: PipelineState, name: str, rng: np.random.Generator) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    """Return a function from an observation to the env action (scores in [-1, 1]) for a ranker."""
    size = state.base.items.shape[1]

    def base_action(obs: dict[str, np.ndarray]) -> np.ndarray:
        return scores_from_order(np.argsort(-obs["base_scores"], kind="stable"), size)

    def random_action(obs: dict[str, np.ndarray]) -> np.ndarray:
        return scores_from_order(rng.permutation(size), size)

    def text_action(obs: dict[str, np.ndarray]) -> np.ndarray:
        mask = obs["history_mask"][:, None]
        profile = (obs["history"] * mask).sum(0)
        profile /= max(float(np.linalg.norm(profile)), 1e-12)
        return scores_from_order(np.argsort(-(obs["candidates"] @ profile), kind="stable"), size)

    if name == "base":
        return base_action
    if name == "random":
        return random_action
    if name == "text_similarity":
        return text_action
    return Reranker(state.policies[name]).action


# ---------------------------------------------------------------------------------------------
# Evaluation


def simulate(state: PipelineState, name: str, sessions: int, seed: int, users: np.ndarray | None = None) -> dict[str, float]:
    """Run ``sessions`` simulated sessions under a ranker; return CTR, mean return and mean session length."""
    env = state.make_env(users)
    rng = np.random.default_rng(seed + 7919)
    act = ranker_action(state, name, rng)
    clicks = shown = 0
    returns, lengths = [], []
    for episode in range(sessions):
        obs, _ = env.reset(seed=seed * 100_003 + episode)
        total, length, done = 0.0, 0, False
        while not done:
            obs, reward, terminated, truncated, info = env.step(act(obs))
            total += reward
            length += 1
            clicks += int(info["clicks"].sum())
            shown += int(info["shown"])
            done = terminated or truncated
        returns.append(total)
        lengths.append(length)
    return {"sim_ctr": clicks / max(shown, 1), "sim_return_mean": float(np.mean(returns)), "sim_session_length_mean": float(np.mean(lengths))}


def evaluate_rankers(state: PipelineState, names: list[str], seeds: list[int], sessions: int) -> dict[str, dict[str, Any]]:
    """Evaluate each ranker offline on the test split and online in the simulator, per seed, with 95% CIs.

    Users without a test item are skipped and counted under ``users_skipped``. The seed drives the
    random ranker, random tie-breaking inside top-k lists, and the simulated sessions.
    """
    # Limitation: the seeds vary evaluation only; the base models and re-rankers are trained once
    # with the run's seed, so the CIs do not cover training variance.
    data = state.data
    users = data.test_users()
    results: dict[str, dict[str, Any]] = {}
    popularity = data.item_popularity()
    for name in names:
        per_seed: dict[str, list[float]] = {metric: [] for metric in (*OFFLINE_METRICS, *ONLINE_METRICS)}
        for seed in seeds:
            rng = np.random.default_rng(seed)
            scores = ranker_scores(state, name, users, rng)
            offline, _ = ranking_metrics(scores, state.base.items[users], data.test_item[users], state.embeddings, popularity, k=10, seed=seed)
            online = simulate(state, name, sessions, seed)
            for metric, value in {**offline, **online}.items():
                per_seed[metric].append(value)
        metrics = {metric: float(np.mean(values)) for metric, values in per_seed.items()}
        ci95 = {metric: list(bootstrap_ci(values, seed=0)) for metric, values in per_seed.items()}
        results[name] = {"metrics": metrics, "ci95": ci95, "per_seed": per_seed}
    results["_info"] = {"users_evaluated": int(len(users)), "users_skipped": int(data.num_users - len(users))}
    return results


# ---------------------------------------------------------------------------------------------
# Re-ranker training and artefacts


def train_rerankers(state: PipelineState, total_steps: int, seed: int, log: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, TrainResult]:
    """Train the configured algorithm (and the other one when ``train_both``) in the simulator."""
    settings = state.settings.reranker
    algorithms = [settings.algorithm] + ([a for a in ("reinforce_topk", "ppo") if a != settings.algorithm] if settings.train_both else [])
    results = {}
    for algorithm in algorithms:
        # The configured algorithm logs under the standard tags; the other one under "ALGORITHM/TAG".
        prefixed = None if log is None else (lambda step, row, a=algorithm: log(step, {k if a == settings.algorithm else f"{a}/{k}": v for k, v in row.items()}))
        if algorithm == "reinforce_topk":
            validate = validation_scorer(state) if settings.select_on_validation else None
            results[algorithm] = train_reinforce_topk(state.make_env, settings, total_steps, seed, prefixed, validate)
        else:
            results[algorithm] = train_ppo(state.make_env, settings, total_steps, seed, prefixed)
        state.policies[algorithm] = results[algorithm].policy
    return results


def reranker_metadata(state: PipelineState, algorithm: str, total_steps: int) -> dict[str, Any]:
    return {
        "split_signature": state.data.split_signature(),
        "algorithm": algorithm,
        "embedding_dim": int(state.embeddings.shape[1]),
        "hidden_size": state.settings.reranker.hidden_size,
        "reranker_settings": state.settings.reranker.model_dump(),
        "simulator_settings": state.settings.simulator.model_dump(),
        "base_model": state.settings.candidates.base_model,
        "total_steps": total_steps,
    }


def load_shipped_policies(state: PipelineState, base: Path | None, total_steps: int) -> bool:
    """Load shipped re-ranker weights that match this split, settings and step budget; True on success."""
    signature = state.data.split_signature()
    settings = state.settings.reranker
    algorithms = [settings.algorithm] + ([a for a in ("reinforce_topk", "ppo") if a != settings.algorithm] if settings.train_both else [])
    loaded: dict[str, RerankPolicy] = {}
    for algorithm in algorithms:
        expected = {key: value for key, value in reranker_metadata(state, algorithm, total_steps).items() if key != "split_signature"}
        found = _matching(_shipped_stem(state.settings, f"reranker_{algorithm}", base), signature, expected)
        if found is None:
            return False
        loaded[algorithm] = load_policy(*found)
    state.policies.update(loaded)
    return True


def save_artefacts(state: PipelineState, folder: Path, total_steps: int, seed: int) -> list[Path]:
    """Write candidates, the preference model and the re-ranker weights (safetensors + JSON) to ``folder``."""
    signature = state.data.split_signature()
    written = []
    for model, candidate_set in state.candidates.items():
        stem = folder / f"candidates_{model}"
        candidate_set.save(stem, {"split_signature": signature, "settings": getattr(state.settings.candidates, model).model_dump(), "num_candidates": state.settings.candidates.num_candidates, "seed": seed, "train_seconds": state.stages[f"candidates_{model}"].seconds})
        written.append(stem)
    stem = folder / "preference"
    cache_name = Path(state.stages["encoder"].info["cache"]).name
    state.preference.save(stem, {"split_signature": signature, "settings": state.settings.preference.model_dump(), "embedding_cache": cache_name, "seed": seed})
    written.append(stem)
    for algorithm, policy in state.policies.items():
        stem = folder / f"reranker_{algorithm}"
        save_checkpoint(stem, policy_state(policy), reranker_metadata(state, algorithm, total_steps))
        written.append(stem)
    return written


# ---------------------------------------------------------------------------------------------
# Shipped world (the env's default and the demo)

_SHIPPED: PipelineState | None = None


def shipped_state() -> PipelineState:
    """Load the shipped ml-latest-small pipeline (no training when the artefacts are present)."""
    global _SHIPPED
    if _SHIPPED is None:
        settings = RecommendationSettings()
        state = prepare(settings, None, seed=0)
        load_shipped_policies(state, None, DEFAULT_TOTAL_STEPS)
        _SHIPPED = state
    return _SHIPPED


def shipped_world() -> SimulatorWorld:
    return shipped_state().world()


# The default budget of scenarios/recommendation/movielens_rl_rerank.yaml, which the shipped
# re-ranker weights were trained with; shipped_state() loads only weights recorded with it.
DEFAULT_TOTAL_STEPS = 20_000
