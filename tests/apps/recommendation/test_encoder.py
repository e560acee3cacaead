"""The item encoder: mean-pooled unit vectors and the embedding cache's invalidation."""

import shutil

import numpy as np
import pytest

from apps.recommendation import encoder
from apps.recommendation.encoder import EncoderSettings, hash_files, item_embeddings

TEXTS = ["Toy Story. 1995. Adventure Animation Children", "Heat. 1995. Action Crime Thriller", "Toy Story 2. 1999. Adventure Animation Children"]


def test_cache_is_reused_and_rebuilt_on_text_change(tmp_path):
    settings = EncoderSettings(batch_size=2)
    first = item_embeddings(TEXTS, "hash-a", "toy", settings, cache_dir=tmp_path, progress=False)
    assert not first.from_cache
    assert first.vectors.shape == (3, 384)
    assert np.linalg.norm(first.vectors, axis=1) == pytest.approx(np.ones(3), abs=1e-5)
    # The two Toy Story entries are closer to each other than to Heat.
    cosine = first.vectors @ first.vectors.T
    assert cosine[0, 2] > cosine[0, 1]

    second = item_embeddings(TEXTS, "hash-a", "toy", settings, cache_dir=tmp_path, progress=False)
    assert second.from_cache
    assert second.cache_path == first.cache_path
    np.testing.assert_allclose(second.vectors, first.vectors, atol=2e-3)

    changed = TEXTS[:2] + ["Jumanji. 1995. Adventure Children Fantasy"]
    third = item_embeddings(changed, "hash-b", "toy", settings, cache_dir=tmp_path, progress=False)
    assert not third.from_cache
    assert third.cache_path != first.cache_path
    assert not first.cache_path.exists()
    np.testing.assert_allclose(third.vectors[:2], first.vectors[:2], atol=1e-5)


def test_cache_is_rebuilt_when_model_files_change(tmp_path, monkeypatch):
    original = encoder.model_dir()
    copy = tmp_path / "model"
    copy.mkdir()
    for path in original.iterdir():
        if path.is_file():
            (copy / path.name).symlink_to(path)
    cache = tmp_path / "cache"
    settings = EncoderSettings()
    monkeypatch.setattr(encoder, "model_dir", lambda: copy)
    first = item_embeddings(TEXTS[:1], "hash-a", "toy", settings, cache_dir=cache, progress=False)
    assert item_embeddings(TEXTS[:1], "hash-a", "toy", settings, cache_dir=cache, progress=False).from_cache

    # Replace one model file with an edited copy: the key changes and the cache is rebuilt.
    target = copy / "config_sentence_transformers.json"
    text = target.read_text()
    target.unlink()
    target.write_text(text + "\n")
    rebuilt = item_embeddings(TEXTS[:1], "hash-a", "toy", settings, cache_dir=cache, progress=False)
    assert not rebuilt.from_cache
    assert rebuilt.cache_path != first.cache_path


def test_hash_files_tracks_content(tmp_path):
    (tmp_path / "a.json").write_text("{}")
    before = hash_files(tmp_path)
    assert hash_files(tmp_path) == before
    (tmp_path / "a.json").write_text("{ }")
    assert hash_files(tmp_path) != before


@pytest.mark.slow
def test_lora_saves_only_the_adapter(tmp_path):
    from apps.recommendation.encoder import LoraSettings, finetune_lora

    settings = EncoderSettings(lora=LoraSettings(enabled=True, steps=2, batch_size=2))
    histories = [np.array([0, 2, 1]), np.array([2, 0])]
    losses = finetune_lora(TEXTS, histories, settings, tmp_path / "adapter", seed=0, progress=False)
    assert set(losses) == {"lora_loss_first", "lora_loss_last"}
    files = sorted(path.name for path in (tmp_path / "adapter").iterdir())
    assert "adapter_model.safetensors" in files
    assert "adapter_config.json" in files
    assert "model.safetensors" not in files
    # LoRA weights on query and value of 6 layers are far smaller than the 90 MB base model.
    assert (tmp_path / "adapter" / "adapter_model.safetensors").stat().st_size < 2_000_000
    tuned = item_embeddings(TEXTS, "hash-a", "toy", settings, cache_dir=tmp_path / "cache", adapter_dir=tmp_path / "adapter", progress=False)
    assert tuned.vectors.shape == (3, 384)
    assert "lora" in tuned.cache_path.name
