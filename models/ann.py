"""Nearest items by inner product over unit LM vectors: exact below a catalogue size,
approximate (HNSW) above it.

FAISS (``faiss-cpu``) rather than hnswlib or usearch: one library gives both the exact flat
index the small catalogues and the tests use and the HNSW graph of the large ones, with the
same calls; it searches a batch of queries in one call, and its index files load without
rebuilding. hnswlib's last release is from 2023. On 200k 384-d clustered vectors here, an
HNSW graph (M 32) took 28 s to build on 2 cores and answered a top-100 query in 0.24-0.36 ms
at efSearch 128-256, where the flat index costs about 10 ms a query alone.

Columns are the rows of the vectors given; ``-1`` pads where fewer than ``k`` exist.
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from flows.config import AnnSettings


_threads: int | None = None  # faiss's OpenMP threads in this process (None: one per core)


def limit_threads(n: int) -> None:
    """At most ``n`` OpenMP threads for faiss in this process, now or once it is imported.
    A serving worker searches a batch of a few users: with a thread per core in each of two
    workers on two cores, a 16-user batch of pooled candidates took 3.2 ms a user in-process
    against 2.95 ms with one thread."""
    global _threads
    _threads = n
    if "faiss" in sys.modules:
        sys.modules["faiss"].omp_set_num_threads(n)


def _faiss():
    """faiss, imported on first use (it is not on the service's start-up path for small
    catalogues); its loader's notes on which CPU build it found stay out of step logs."""
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    import faiss

    if _threads is not None:
        faiss.omp_set_num_threads(_threads)
    return faiss


@dataclass
class VectorIndex:
    """Top-k search over ``vectors`` (unit rows) by inner product, i.e. cosine."""

    index: object  # a faiss index
    n_items: int
    exact: bool

    @classmethod
    def build(cls, vectors: np.ndarray, cfg: AnnSettings, exact: bool | None = None) -> VectorIndex:
        """An exact flat index at ``cfg.exact_max_items`` items or fewer (or with ``exact``),
        else an HNSW graph with ``cfg``'s settings."""
        faiss = _faiss()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        n, dim = vectors.shape
        exact = n <= cfg.exact_max_items if exact is None else exact
        if exact:
            index = faiss.IndexFlatIP(dim)
        else:
            index = faiss.IndexHNSWFlat(dim, cfg.m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = cfg.ef_construction
            index.hnsw.efSearch = cfg.ef_search
        index.add(vectors)
        return cls(index, n, exact)

    def search(self, queries: np.ndarray, k: int, ef: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, columns)``, each ``(len(queries), k)``: the best first, ``-1`` columns
        (score ``-inf``) where the index holds fewer. A query of zeros (a user or item with no
        vector) finds nothing: every item ties at 0 for it, so no neighbour means anything.
        ``ef``: HNSW's search breadth for this call (None: the index's; at least ``k``)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = int(k)
        if not len(queries) or k <= 0:
            return np.empty((len(queries), max(k, 0)), np.float32), np.full((len(queries), max(k, 0)), -1, np.int64)
        params = None
        # HNSW returns at most efSearch results: a deeper list needs a wider search.
        width = max(k, self.index.hnsw.efSearch if ef is None else ef) if not self.exact else None
        if width is not None and width != self.index.hnsw.efSearch:
            params = _faiss().SearchParametersHNSW(efSearch=width)
        scores, columns = self.index.search(queries, min(k, self.n_items), params=params)
        blank = ~np.any(queries != 0, axis=1)
        columns[blank], scores[blank] = -1, -np.inf
        scores[columns < 0] = -np.inf
        if k > self.n_items:
            pad = k - self.n_items
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
            columns = np.pad(columns, ((0, 0), (0, pad)), constant_values=-1)
        return scores, columns.astype(np.int64)

    def neighbours(self, vectors: np.ndarray, k: int, batch: int = 8192) -> tuple[np.ndarray, np.ndarray]:
        """``(columns, scores)``, each ``(n_items, k)``: each item's ``k`` nearest other items
        (``vectors`` are the indexed rows) and their cosines, precomputed so that a user's
        recent items cost a lookup; -1 and -inf pad."""
        out = np.full((self.n_items, k), -1, dtype=np.int64)
        cosines = np.full((self.n_items, k), -np.inf, dtype=np.float32)
        for start in range(0, self.n_items, batch):
            stop = min(start + batch, self.n_items)
            scores, found = self.search(vectors[start:stop], k + 1)
            own = found == np.arange(start, stop)[:, None]
            # Drop the item itself wherever it came back, else the last of the k + 1.
            keep = ~own & (np.cumsum(~own, axis=1) <= k)
            for r in range(stop - start):
                row = found[r][keep[r]]
                out[start + r, : len(row)] = row
                cosines[start + r, : len(row)] = scores[r][keep[r]]
        return out, cosines


@dataclass
class Neighbourhood:
    """A catalogue's vector index and each item's LM neighbours (``item_ids`` in row order):
    what pooled candidates read, built once by the package step and loaded by the service."""

    item_ids: np.ndarray
    index: VectorIndex
    neighbours: np.ndarray  # (len(item_ids), cfg.neighbours) item rows, -1 padded
    scores: np.ndarray  # their cosines, -inf padded

    FILES = ("lm_index.faiss", "lm_neighbours.npy", "lm_neighbour_scores.npy", "lm_index_items.npy")

    @classmethod
    def build(cls, item_ids: np.ndarray, unit_vectors: np.ndarray, cfg: AnnSettings) -> Neighbourhood:
        index = VectorIndex.build(unit_vectors, cfg)
        return cls(np.asarray(item_ids), index, *index.neighbours(unit_vectors, cfg.neighbours))

    def save(self, folder: Path) -> None:
        faiss = _faiss()
        index_file, neighbours_file, scores_file, ids_file = (Path(folder) / name for name in self.FILES)
        faiss.write_index(self.index.index, str(index_file))
        np.save(neighbours_file, self.neighbours)
        np.save(scores_file, self.scores)
        np.save(ids_file, self.item_ids, allow_pickle=self.item_ids.dtype == object)

    @classmethod
    def load(cls, folder: Path) -> Neighbourhood | None:
        """The neighbourhood saved in ``folder``; None where there is none."""
        faiss = _faiss()
        index_file, neighbours_file, scores_file, ids_file = (Path(folder) / name for name in cls.FILES)
        if not index_file.exists():
            return None
        index = faiss.read_index(str(index_file))
        return cls(np.load(ids_file, allow_pickle=True), VectorIndex(index, index.ntotal, not hasattr(index, "hnsw")),
                   np.load(neighbours_file), np.load(scores_file))


def recall(approximate_scores: np.ndarray, exact_scores: np.ndarray, epsilon: float = 1e-3) -> float:
    """Recall@k as ann-benchmarks counts it: the share of the approximate top-k whose score is
    within ``epsilon`` of the exact k-th best or above it, so that items tied with the k-th
    (templated texts have many) count as found. Rows are ``(queries, k)``; ``-inf`` pads."""
    kth = exact_scores[:, -1:]
    found = (approximate_scores >= kth - epsilon) & np.isfinite(approximate_scores)
    wanted = np.isfinite(exact_scores).sum(axis=1)
    rows = wanted > 0
    return float(np.mean(np.minimum(found.sum(axis=1)[rows], wanted[rows]) / wanted[rows])) if rows.any() else float("nan")
