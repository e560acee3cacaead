"""Candidate generation with RecBole: BPR (general) and SASRec (sequential) trained on the training split.

RecBole reads pre-split benchmark files (``NAME.train.inter``, ``NAME.valid.inter``,
``NAME.test.inter``) written from :class:`~apps.recommendation.data.SplitDataset`, so the split it
trains on is exactly the leakage-free training split. ``recbole.quick_start`` is never imported
because it imports Ray Tune. RecBole's own checkpoint reload calls ``torch.load`` on a pickled
file, which torch >= 2.6 rejects by default, so weights are saved here as safetensors instead.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from apps.recommendation.data import SplitDataset
from shared.checkpoints import load_checkpoint, save_checkpoint

logger = logging.getLogger("scenariolab.apps.recommendation.candidates")

MODEL_NAMES = ("bpr", "sasrec")


class BaseModelSettings(BaseModel):
    """Hyperparameters of one RecBole base model."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(20, ge=1)
    embedding_size: int = Field(64, ge=4)
    learning_rate: float = Field(1e-3, gt=0)
    train_batch_size: int = Field(2048, ge=1)
    max_seq_length: int = Field(20, ge=2, description="SASRec only: items of history the model reads.")
    num_layers: int = Field(1, ge=1, description="SASRec only: transformer layers.")
    max_targets_per_user: int = Field(30, ge=1, description="SASRec only: training targets per user, the latest ones (bounds the epoch time).")


class CandidateSettings(BaseModel):
    """Candidate generation: the base model that ranks the catalogue and the candidates kept per user."""

    model_config = ConfigDict(extra="forbid")

    base_model: Literal["bpr", "sasrec"] = "bpr"
    num_candidates: int = Field(100, ge=10)
    bpr: BaseModelSettings = Field(default_factory=lambda: BaseModelSettings(epochs=10))
    sasrec: BaseModelSettings = Field(default_factory=lambda: BaseModelSettings(epochs=3))


@dataclass
class CandidateSet:
    """Top-N items per user from one base model, over dense item ids, with the model's scores."""

    model: str
    items: np.ndarray  # (num_users, N) int64 dense item ids
    scores: np.ndarray  # (num_users, N) float32, descending per row
    recbole_metrics: dict[str, dict[str, float]]
    # The validation view: the top N with only the training items excluded, so the validation item
    # can be among them. The REINFORCE trainer chooses its returned iterate on this view.
    valid_items: np.ndarray | None = None
    valid_scores: np.ndarray | None = None

    def tensors(self) -> dict[str, torch.Tensor]:
        tensors = {"items": torch.from_numpy(self.items.astype(np.int64)), "scores": torch.from_numpy(self.scores.astype(np.float32))}
        if self.valid_items is not None and self.valid_scores is not None:
            tensors["valid_items"] = torch.from_numpy(self.valid_items.astype(np.int64))
            tensors["valid_scores"] = torch.from_numpy(self.valid_scores.astype(np.float32))
        return tensors

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> "CandidateSet":
        valid_items = tensors["valid_items"].numpy() if "valid_items" in tensors else None
        valid_scores = tensors["valid_scores"].numpy() if "valid_scores" in tensors else None
        return cls(str(metadata["model"]), tensors["items"].numpy(), tensors["scores"].numpy(), dict(metadata.get("recbole_metrics", {})), valid_items, valid_scores)

    def save(self, stem: Path, metadata: dict[str, Any]) -> None:
        save_checkpoint(stem, self.tensors(), {**metadata, "model": self.model, "recbole_metrics": self.recbole_metrics})

    @classmethod
    def load(cls, stem: Path) -> tuple["CandidateSet", dict[str, Any]]:
        tensors, metadata = load_checkpoint(stem)
        return cls.from_tensors(tensors, metadata), metadata


def _write_benchmark_files(data: SplitDataset, folder: Path, sequential: bool, max_seq_length: int, max_targets: int) -> None:
    """Write the split as RecBole benchmark files; sequential models get pre-built history lists."""
    name = data.name
    histories = data.train_histories()
    user_tokens = data.user_tokens
    item_tokens = data.item_tokens
    if not sequential:
        with (folder / f"{name}.train.inter").open("w", encoding="utf-8") as handle:
            handle.write("user_id:token\titem_id:token\n")
            for user, history in enumerate(histories):
                for item in history:
                    handle.write(f"{user_tokens[user]}\t{item_tokens[item]}\n")
        for part, targets in (("valid", data.valid_item), ("test", data.test_item)):
            with (folder / f"{name}.{part}.inter").open("w", encoding="utf-8") as handle:
                handle.write("user_id:token\titem_id:token\n")
                for user, item in enumerate(targets):
                    if item >= 0:
                        handle.write(f"{user_tokens[user]}\t{item_tokens[item]}\n")
        return

    def history_text(items: np.ndarray) -> str:
        return " ".join(str(item_tokens[item]) for item in items[-max_seq_length:])

    with (folder / f"{name}.train.inter").open("w", encoding="utf-8") as handle:
        handle.write("user_id:token\titem_id_list:token_seq\titem_id:token\n")
        for user, history in enumerate(histories):
            for position in range(max(1, len(history) - max_targets), len(history)):
                handle.write(f"{user_tokens[user]}\t{history_text(history[:position])}\t{item_tokens[history[position]]}\n")
    with (folder / f"{name}.valid.inter").open("w", encoding="utf-8") as handle:
        handle.write("user_id:token\titem_id_list:token_seq\titem_id:token\n")
        for user, item in enumerate(data.valid_item):
            if item >= 0 and len(histories[user]):
                handle.write(f"{user_tokens[user]}\t{history_text(histories[user])}\t{item_tokens[item]}\n")
    with (folder / f"{name}.test.inter").open("w", encoding="utf-8") as handle:
        handle.write("user_id:token\titem_id_list:token_seq\titem_id:token\n")
        for user, item in enumerate(data.test_item):
            if item >= 0 and len(histories[user]):
                sequence = np.append(histories[user], data.valid_item[user])
                handle.write(f"{user_tokens[user]}\t{history_text(sequence)}\t{item_tokens[item]}\n")


def _recbole_config(model: str, data: SplitDataset, folder: Path, settings: BaseModelSettings, seed: int) -> Any:
    from recbole.config import Config

    sequential = model == "sasrec"
    config_dict: dict[str, Any] = {
        "data_path": str(folder),
        "benchmark_filename": ["train", "valid", "test"],
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "load_col": {"inter": ["user_id", "item_id"] + (["item_id_list"] if sequential else [])},
        "epochs": settings.epochs,
        "train_batch_size": settings.train_batch_size,
        "eval_batch_size": 4096,
        "learning_rate": settings.learning_rate,
        "embedding_size": settings.embedding_size,
        "eval_step": 0,
        "stopping_step": 1000,
        "eval_args": {"order": "TO", "mode": "full", "group_by": "user"},
        "metrics": ["Recall", "MRR", "NDCG", "Hit"],
        "topk": [10],
        "valid_metric": "NDCG@10",
        "device": "cpu",
        "use_gpu": False,
        "seed": seed,
        "reproducibility": True,
        "checkpoint_dir": str(folder / "recbole_checkpoints"),
        "show_progress": False,
        "state": "WARNING",
        "worker": 0,
    }
    if sequential:
        config_dict.update(
            {
                "alias_of_item_id": ["item_id_list"],
                "MAX_ITEM_LIST_LENGTH": settings.max_seq_length,
                "hidden_size": settings.embedding_size,
                "inner_size": settings.embedding_size * 2,
                "n_layers": settings.num_layers,
                "n_heads": 2,
                "loss_type": "CE",
                "train_neg_sample_args": None,
            }
        )
    else:
        config_dict["train_neg_sample_args"] = {"distribution": "uniform", "sample_num": 1, "alpha": 1.0, "dynamic": False, "candidate_num": 0}
    # RecBole's Config also parses sys.argv for --key=value overrides; hide ScenarioLab's own
    # command line from it so no CLI option leaks into the base model's configuration.
    saved_argv = sys.argv
    sys.argv = saved_argv[:1]
    try:
        return Config(model="SASRec" if sequential else "BPR", dataset=data.name, config_dict=config_dict)
    finally:
        sys.argv = saved_argv


def train_base_model(model: str, data: SplitDataset, settings: BaseModelSettings, seed: int, num_candidates: int) -> CandidateSet:
    """Train one RecBole model on the training split, report RecBole's full-sort metrics, rank candidates.

    Test candidates exclude the user's training items and validation item, which the user has
    already consumed by test time. Validation candidates exclude only the training items.
    """
    from recbole.data import create_dataset, data_preparation
    from recbole.model.general_recommender import BPR
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    sequential = model == "sasrec"
    for name in ("", "recbole"):
        logging.getLogger(name).setLevel(max(logging.getLogger(name).level, logging.WARNING))
    with tempfile.TemporaryDirectory(prefix="scenariolab-recbole-") as tmp:
        folder = Path(tmp) / data.name
        folder.mkdir()
        _write_benchmark_files(data, folder, sequential, settings.max_seq_length, settings.max_targets_per_user)
        config = _recbole_config(model, data, Path(tmp), settings, seed)
        init_seed(config["seed"], config["reproducibility"])
        dataset = create_dataset(config)
        train_data, valid_data, test_data = data_preparation(config, dataset)
        network = (SASRec if sequential else BPR)(config, train_data.dataset).to("cpu")
        # RecBole's Trainer writes TensorBoard events under the relative path ./log_tensorboard (at
        # construction and again in fit), so it runs inside the temporary folder.
        with contextlib.chdir(tmp):
            trainer = Trainer(config, network)
            trainer.fit(train_data, valid_data=None, saved=False, show_progress=False, verbose=False)
            metrics = {
                "valid": {key: float(value) for key, value in trainer.evaluate(valid_data, load_best_model=False).items()},
                "test": {key: float(value) for key, value in trainer.evaluate(test_data, load_best_model=False).items()},
            }
        logger.info("%s full-sort metrics from RecBole: %s", model, metrics)
        (items, scores), (valid_items, valid_scores) = _rank_candidates(network, dataset, data, sequential, settings.max_seq_length, num_candidates)
    return CandidateSet(model, items, scores, metrics, valid_items, valid_scores)


@torch.no_grad()
def _rank_candidates(network: Any, dataset: Any, data: SplitDataset, sequential: bool, max_len: int, num_candidates: int) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Score the whole catalogue for each user from the training history and keep the top N.

    Returns (items, scores) for test, without the validation item, and the same for validation, with it.
    """
    from recbole.data.interaction import Interaction

    network.eval()
    user_ids = dataset.field2token_id["user_id"]
    item_ids = dataset.field2token_id["item_id"]
    recbole_to_dense = np.full(dataset.item_num, -1, dtype=np.int64)
    dense_to_recbole = np.zeros(data.num_items, dtype=np.int64)
    for dense, token in enumerate(data.item_tokens):
        recbole_id = item_ids.get(str(token))
        if recbole_id is not None:
            recbole_to_dense[recbole_id] = dense
            dense_to_recbole[dense] = recbole_id
    histories = data.train_histories()
    items = np.zeros((data.num_users, num_candidates), dtype=np.int64)
    scores = np.zeros((data.num_users, num_candidates), dtype=np.float32)
    valid_items = np.zeros((data.num_users, num_candidates), dtype=np.int64)
    valid_scores = np.zeros((data.num_users, num_candidates), dtype=np.float32)
    batch = 256
    for start in range(0, data.num_users, batch):
        users = np.arange(start, min(start + batch, data.num_users))
        if sequential:
            sequences = np.zeros((len(users), max_len), dtype=np.int64)
            lengths = np.ones(len(users), dtype=np.int64)
            for row, user in enumerate(users):
                history = dense_to_recbole[histories[user][-max_len:]]
                if len(history):
                    sequences[row, : len(history)] = history
                    lengths[row] = len(history)
            interaction = Interaction({"item_id_list": torch.from_numpy(sequences), "item_length": torch.from_numpy(lengths)})
        else:
            ids = np.array([user_ids.get(str(data.user_tokens[user]), 0) for user in users], dtype=np.int64)
            interaction = Interaction({"user_id": torch.from_numpy(ids)})
        full = network.full_sort_predict(interaction).view(len(users), -1).float()
        full[:, 0] = -torch.inf
        for row, user in enumerate(users):
            seen = dense_to_recbole[histories[user]]
            full[row, seen[seen > 0]] = -torch.inf
        # Items RecBole never saw have no dense id; they stay out of the candidates.
        full[:, torch.from_numpy(recbole_to_dense < 0)] = -torch.inf
        top = torch.topk(full, num_candidates, dim=1)
        valid_items[users] = recbole_to_dense[top.indices.numpy()]
        valid_scores[users] = top.values.numpy()
        for row, user in enumerate(users):
            if data.valid_item[user] >= 0 and dense_to_recbole[data.valid_item[user]] > 0:
                full[row, dense_to_recbole[data.valid_item[user]]] = -torch.inf
        top = torch.topk(full, num_candidates, dim=1)
        items[users] = recbole_to_dense[top.indices.numpy()]
        scores[users] = top.values.numpy()
    return (items, scores), (valid_items, valid_scores)
