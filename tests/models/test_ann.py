"""The LM vector index: exact below the size setting, HNSW above it with recall@100 against
exact search as ``benchmarks/scale.py`` reports it."""
from __future__ import annotations

import numpy as np

from flows.config import AnnSettings
from models.ann import VectorIndex, recall
from models.lm_score import normalise


def clustered(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(50, dim))
    return normalise((centres[rng.integers(50, size=n)] + 0.4 * rng.normal(size=(n, dim))).astype(np.float32))


def test_exact_index_is_the_brute_force_top_k():
    vectors = clustered(2000)
    index = VectorIndex.build(vectors, AnnSettings())
    assert index.exact
    queries = vectors[:20]
    _, found = index.search(queries, 10)
    brute = np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :10]
    assert recall(found, brute) == 1.0


def test_hnsw_recall_at_100_against_exact_search():
    vectors = clustered(20_000)
    cfg = AnnSettings(exact_max_items=1000)
    approximate, exact = VectorIndex.build(vectors, cfg), VectorIndex.build(vectors, cfg, exact=True)
    assert not approximate.exact and exact.exact
    queries = vectors[::200]
    assert recall(approximate.search(queries, 100)[1], exact.search(queries, 100)[1]) >= 0.95


def test_a_query_without_a_vector_finds_nothing_and_short_catalogues_pad():
    vectors = clustered(30)
    index = VectorIndex.build(vectors, AnnSettings())
    scores, found = index.search(np.vstack([np.zeros(32, np.float32), vectors[0]]), 40)
    assert (found[0] == -1).all() and np.isneginf(scores[0]).all()
    assert (found[1, :30] >= 0).all() and (found[1, 30:] == -1).all()


def test_neighbours_leave_the_item_itself_out():
    vectors = clustered(500)
    index = VectorIndex.build(vectors, AnnSettings())
    near = index.neighbours(vectors, 5)
    assert near.shape == (500, 5) and not (near == np.arange(500)[:, None]).any()
    assert (near >= 0).all()
