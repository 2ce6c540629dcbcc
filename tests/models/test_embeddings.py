"""The embedding cache with the real bundled MiniLM: a rerun embeds only new or changed text."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.embeddings import EmbeddingCache, build_item_vectors, embed_items, load_vectors, save_vectors, text_key
from flows.config import LMSettings
from models.lm import MeanPoolEncoder, load_encoder


class Counting:
    """Wraps an encoder and counts what reaches the model."""

    def __init__(self, inner) -> None:
        self.inner, self.calls, self.texts = inner, 0, 0

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def dim(self) -> int:
        return self.inner.dim

    def encode(self, texts, batch_size=None) -> np.ndarray:
        self.calls += 1
        self.texts += len(texts)
        return self.inner.encode(texts, batch_size)


@pytest.fixture(scope="module")
def minilm() -> MeanPoolEncoder:
    return load_encoder(LMSettings(device="cpu", progress=False)).load()


@pytest.fixture
def items() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": pd.array([3, 1, 2, 4], dtype="Int64"),
            "title": ["Heat (1995)", "Toy Story (1995)", "Jumanji (1995)", "Aladdin (1992)"],
            "text": pd.array(
                [
                    "Heat (1995) Genres: Action, Crime, Thriller.",
                    "Toy Story (1995) Genres: Animation, Children's, Comedy.",
                    "Jumanji (1995) Genres: Adventure, Children's, Fantasy.",
                    "Aladdin (1992) Genres: Animation, Children's, Comedy, Musical.",
                ],
                dtype="string",
            ),
        }
    )


def test_rerun_embeds_nothing_and_a_changed_text_exactly_once(tmp_path: Path, minilm, items) -> None:
    encoder = Counting(minilm)
    ids, first = embed_items(items, encoder, tmp_path)
    assert ids.tolist() == [1, 2, 3, 4] and first.shape == (4, 384) and first.dtype == np.float32
    assert encoder.texts == 4
    np.testing.assert_allclose(first, minilm.encode(items.sort_values("item_id")["text"].tolist()), atol=1e-6)

    cache = EmbeddingCache(tmp_path, minilm.model_id)  # read back from disk
    _, again = embed_items(items, encoder, cache)
    assert (encoder.calls, encoder.texts) == (1, 4)  # the model was not called again
    assert (cache.hits, cache.misses, cache.embedded) == (4, 0, 0)
    np.testing.assert_array_equal(again, first)

    changed = items.copy()
    changed.loc[changed["item_id"] == 3, "text"] = "Heat (1995) Genres: Action, Crime, Thriller. Tags: de niro, pacino."
    cache = EmbeddingCache(tmp_path, minilm.model_id)
    _, after = embed_items(changed, encoder, cache)
    assert encoder.texts == 5 and (cache.hits, cache.misses, cache.embedded) == (3, 1, 1)
    np.testing.assert_array_equal(after[[0, 1, 3]], first[[0, 1, 3]])
    assert not np.allclose(after[2], first[2])

    new = pd.concat([changed, pd.DataFrame({"item_id": pd.array([9], dtype="Int64"), "text": ["Fargo (1996)"]})])
    _, grown = embed_items(new, encoder, tmp_path)
    assert encoder.texts == 6 and grown.shape == (5, 384)


def test_warm_cache_never_loads_the_model(tmp_path: Path, minilm, items) -> None:
    embed_items(items, minilm, tmp_path)
    fresh = load_encoder(device="cpu", progress=False)
    assert fresh.model_id == minilm.model_id and fresh.model is None
    embed_items(items, fresh, tmp_path)
    assert fresh.model is None


def test_duplicate_texts_are_embedded_once(tmp_path: Path, minilm) -> None:
    encoder = Counting(minilm)
    twins = pd.DataFrame({"item_id": [1, 2, 3], "text": ["same text", "same text", "other"]})
    _, vectors = embed_items(twins, encoder, tmp_path)
    assert encoder.texts == 2
    np.testing.assert_array_equal(vectors[0], vectors[1])


def test_cache_files_are_per_model_and_complete(tmp_path: Path, minilm, items) -> None:
    embed_items(items, minilm, tmp_path)
    embed_items(items.assign(text=items["text"] + " More."), minilm, tmp_path)
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert folder.name.startswith("all-MiniLM-L6-v2_mean_")
    assert len(list(folder.glob("shard-*.npz"))) == 2  # one shard per run that embedded something
    assert not list(folder.glob(".*tmp"))  # no leftovers of the atomic writes
    assert len(EmbeddingCache(tmp_path, minilm.model_id)) == 8
    assert len(EmbeddingCache(tmp_path, "another-model")) == 0  # another model, another folder


def test_keys_depend_on_model_and_text() -> None:
    assert text_key("m", "a") == text_key("m", "a")
    assert len({text_key("m", "a"), text_key("n", "a"), text_key("m", "b"), text_key("m\0", "a")}) == 4


def test_cache_for_another_model_is_refused(tmp_path: Path, minilm, items) -> None:
    with pytest.raises(ValueError, match="cache is for"):
        embed_items(items, minilm, EmbeddingCache(tmp_path, "another-model"))
    with pytest.raises(ValueError, match="duplicate item_id"):
        embed_items(pd.concat([items, items]), minilm, tmp_path)


def test_stage_writes_vectors_and_reruns_from_cache(tmp_path: Path, items) -> None:
    items.to_parquet(tmp_path / "items.parquet")
    cfg = LMSettings(device="cpu", progress=False, cache_dir=tmp_path / "cache")
    first = build_item_vectors(tmp_path / "items.parquet", tmp_path / "vectors.npz", cfg)
    assert first["items"] == 4 and first["embedded"] == 4 and first["dim"] == 384
    second = build_item_vectors(tmp_path / "items.parquet", tmp_path / "vectors.npz", cfg)
    assert second["embedded"] == 0 and second["cache_hits"] == 4
    ids, vectors, model_id = load_vectors(tmp_path / "vectors.npz")
    assert ids.tolist() == [1, 2, 3, 4] and vectors.shape == (4, 384) and model_id == first["model_id"]


def test_save_and_load_vectors_round_trip(tmp_path: Path) -> None:
    vectors = np.eye(3, dtype=np.float32)
    save_vectors(tmp_path / "v.npz", np.array([5, 6, 7]), vectors, "m/x/1")
    ids, back, model_id = load_vectors(tmp_path / "v.npz")
    assert ids.dtype == np.int64 and model_id == "m/x/1"
    np.testing.assert_array_equal(back, vectors)
