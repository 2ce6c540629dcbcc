"""Item vectors, cached on disk so that a rerun embeds only new or changed text.

A vector's key is ``sha256(model_id + "\\0" + text)``: another model, or an item whose text
changed, misses the cache; everything else is read back. The cache keeps one folder per
model id, holding append-only shards (``.npz``: ``keys`` and ``vectors``); each embedding run
adds at most one shard, written to a temporary name and renamed into place, so a crash never
leaves a half-written shard and two runs never overwrite each other's.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from features.ids import as_array, kind_of
from models.files import atomic_write
from models.lm import Encoder

log = logging.getLogger(__name__)

_KEY = "S64"  # hex sha256: ASCII, so NumPy's byte strings keep every character


def text_key(model_id: str, text: str) -> bytes:
    """The cache key of one text under one model."""
    return hashlib.sha256(f"{model_id}\0{text}".encode()).hexdigest().encode()


def _slug(model_id: str) -> str:
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", model_id).strip("_")[:60]
    return f"{readable}-{hashlib.sha256(model_id.encode()).hexdigest()[:8]}"


class EmbeddingCache:
    """Vectors of one model, keyed by ``text_key``; counts hits and misses of ``lookup``."""

    def __init__(self, root: str | Path, model_id: str) -> None:
        self.model_id = model_id
        self.folder = Path(root) / _slug(model_id)
        self.hits = 0
        self.misses = 0
        self.embedded = 0  # texts sent to the model through embed_texts
        self._index: dict[bytes, tuple[int, int]] = {}  # key -> (shard number, row)
        self._shards: list[np.ndarray] = []
        self.dim: int | None = None
        self._read()

    def _read(self) -> None:
        meta = self.folder / "model.json"
        if meta.is_file() and json.loads(meta.read_text())["model_id"] != self.model_id:
            raise ValueError(f"{self.folder} caches {json.loads(meta.read_text())['model_id']!r}, not {self.model_id!r}")
        for path in sorted(self.folder.glob("shard-*.npz")):
            with np.load(path, allow_pickle=False) as shard:
                keys, vectors = shard["keys"], shard["vectors"]
            self._add(keys, vectors)

    def _add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        if self.dim is None:
            self.dim = int(vectors.shape[1])
        elif vectors.shape[1] != self.dim:
            raise ValueError(f"cache {self.folder} holds {self.dim}-dim vectors, got {vectors.shape[1]}")
        number = len(self._shards)
        self._shards.append(vectors.astype(np.float32, copy=False))
        for row, key in enumerate(keys.tolist()):
            self._index[key] = (number, row)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: bytes) -> bool:
        return key in self._index

    def lookup(self, keys: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """``(found, vectors)``: a mask of the keys held, and their vectors (zeros elsewhere)."""
        places = [self._index.get(k, (-1, -1)) for k in keys]
        shards = np.array([p[0] for p in places], dtype=np.int64)
        rows = np.array([p[1] for p in places], dtype=np.int64)
        found = shards >= 0
        vectors = np.zeros((len(keys), self.dim or 0), dtype=np.float32)
        for number in np.unique(shards[found]):
            take = shards == number
            vectors[take] = self._shards[number][rows[take]]
        self.hits += int(found.sum())
        self.misses += int((~found).sum())
        return found, vectors

    def put(self, keys: Sequence[bytes], vectors: np.ndarray) -> Path | None:
        """Store new vectors as one shard (keys already held are skipped); its path, or None."""
        new = [i for i, k in enumerate(keys) if k not in self._index]
        if not new:
            return None
        keys_array = np.array([keys[i] for i in new], dtype=_KEY)
        rows = np.ascontiguousarray(vectors[new], dtype=np.float32)
        meta = self.folder / "model.json"
        if not meta.is_file():
            payload = json.dumps({"model_id": self.model_id, "dim": int(rows.shape[1])}).encode()
            atomic_write(meta, lambda handle: handle.write(payload))
        path = self.folder / f"shard-{len(self._shards):05d}-{uuid.uuid4().hex[:8]}.npz"
        atomic_write(path, lambda handle: np.savez(handle, keys=keys_array, vectors=rows))
        self._add(keys_array, rows)
        return path


def embed_texts(texts: Sequence[str], encoder: Encoder, cache: EmbeddingCache, batch_size: int | None = None) -> np.ndarray:
    """Vectors of ``texts`` in order; only texts the cache lacks reach the encoder (each once)."""
    if cache.model_id != encoder.model_id:
        raise ValueError(f"cache is for {cache.model_id!r}, encoder is {encoder.model_id!r}")
    texts = [str(t) for t in texts]
    keys = [text_key(encoder.model_id, t) for t in texts]
    found, vectors = cache.lookup(keys)
    if vectors.shape[1] == 0:
        vectors = np.zeros((len(texts), encoder.dim), dtype=np.float32)
    missing = np.flatnonzero(~found)
    if len(missing):
        unique: dict[bytes, int] = {}
        for i in missing:
            unique.setdefault(keys[i], int(i))
        fresh = encoder.encode([texts[i] for i in unique.values()], batch_size=batch_size)
        cache.embedded += len(unique)
        cache.put(list(unique), fresh)
        by_key = dict(zip(unique, fresh))
        for i in missing:
            vectors[i] = by_key[keys[i]]
    log.info("%d texts: %d from the cache, %d embedded with %s", len(texts), int(found.sum()), len(missing), encoder.model_id)
    return vectors


def embed_items(
    items: pd.DataFrame,
    encoder: Encoder,
    cache_dir: str | Path | EmbeddingCache,
    batch_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(item_ids, vectors)`` for an items table (``item_id``, ``text``), sorted by item id.

    ``cache_dir`` is the cache's root folder, or an ``EmbeddingCache`` whose counters the
    caller wants to read.
    """
    if items["item_id"].duplicated().any():
        raise ValueError("items has duplicate item_id values")
    cache = cache_dir if isinstance(cache_dir, EmbeddingCache) else EmbeddingCache(cache_dir, encoder.model_id)
    ordered = items.sort_values("item_id", kind="stable")
    item_ids = as_array(ordered["item_id"], kind_of(ordered["item_id"]))
    texts = ordered["text"].fillna("").astype(str).tolist()
    return item_ids, embed_texts(texts, encoder, cache, batch_size=batch_size)


def save_vectors(path: str | Path, item_ids: np.ndarray, vectors: np.ndarray, model_id: str) -> Path:
    """Write a stage output: item ids, their vectors and the model id, in one ``.npz``."""
    path = Path(path)
    atomic_write(
        path,
        lambda handle: np.savez(
            handle, item_ids=as_array(item_ids, kind_of(item_ids)), vectors=vectors.astype(np.float32), model_id=np.array(model_id)
        ),
    )
    return path


def load_vectors(path: str | Path) -> tuple[np.ndarray, np.ndarray, str]:
    """``(item_ids, vectors, model_id)`` as ``save_vectors`` wrote them."""
    with np.load(path, allow_pickle=False) as data:
        return data["item_ids"], data["vectors"], str(data["model_id"])


def build_item_vectors(items_path: str | Path, out_path: str | Path, cfg=None) -> dict:
    """The embedding stage: the validated items table -> ``out_path`` (``save_vectors``).

    ``cfg``: params.yaml's ``lm`` section (``cache_dir`` among its fields).
    Returns what a stage reports: the model, item count, cache hits and texts embedded.
    """
    import time

    from flows.config import LMSettings
    from models.lm import load_encoder

    cfg = cfg or LMSettings()
    started = time.perf_counter()
    items = pd.read_parquet(items_path, columns=["item_id", "text"])
    encoder = load_encoder(cfg)
    cache = EmbeddingCache(cfg.cache_dir, encoder.model_id)
    item_ids, vectors = embed_items(items, encoder, cache, batch_size=cfg.batch_size)
    save_vectors(out_path, item_ids, vectors, encoder.model_id)
    return {
        "model_id": encoder.model_id,
        "items": len(item_ids),
        "dim": int(vectors.shape[1]),
        "cache_hits": cache.hits,
        "embedded": cache.embedded,
        "seconds": round(time.perf_counter() - started, 2),
    }
