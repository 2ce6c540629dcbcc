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
    scores, found = index.search(queries, 10)
    brute = np.sort(queries @ vectors.T, axis=1)[:, ::-1][:, :10]
    np.testing.assert_allclose(scores, brute, atol=1e-5)
    assert recall(scores, brute) == 1.0 and np.array_equal(found[:, 0], np.arange(20))


def test_recall_counts_ties_with_the_kth_as_found_and_misses_as_missed():
    exact = np.array([[0.9, 0.8, 0.7]])
    assert recall(np.array([[0.9, 0.8, 0.7]]), exact) == 1.0
    assert recall(np.array([[0.9, 0.7, 0.7]]), exact) == 1.0  # another item tied with the 3rd
    assert recall(np.array([[0.9, 0.8, 0.5]]), exact) == 2 / 3


def test_hnsw_recall_at_100_against_exact_search():
    vectors = clustered(20_000)
    cfg = AnnSettings(exact_max_items=1000)
    approximate, exact = VectorIndex.build(vectors, cfg), VectorIndex.build(vectors, cfg, exact=True)
    assert not approximate.exact and exact.exact
    queries = vectors[::200]
    assert recall(approximate.search(queries, 100)[0], exact.search(queries, 100)[0]) >= 0.95


def test_a_query_without_a_vector_finds_nothing_and_short_catalogues_pad():
    vectors = clustered(30)
    index = VectorIndex.build(vectors, AnnSettings())
    scores, found = index.search(np.vstack([np.zeros(32, np.float32), vectors[0]]), 40)
    assert (found[0] == -1).all() and np.isneginf(scores[0]).all()
    assert (found[1, :30] >= 0).all() and (found[1, 30:] == -1).all()


def test_neighbours_leave_the_item_itself_out():
    vectors = clustered(500)
    index = VectorIndex.build(vectors, AnnSettings())
    near, cosines = index.neighbours(vectors, 5)
    assert near.shape == (500, 5) and not (near == np.arange(500)[:, None]).any()
    assert (near >= 0).all()
    np.testing.assert_allclose(cosines, np.einsum("id,ikd->ik", vectors, vectors[near]), atol=1e-5)
    assert (np.diff(cosines, axis=1) <= 1e-6).all()  # best first


def test_a_saved_neighbourhood_loads_with_its_ids_and_answers_alike(tmp_path):
    from models.ann import Neighbourhood

    vectors = clustered(3000)
    ids = np.array([f"SKU-{i:05d}" for i in range(3000)], dtype=object)
    near = Neighbourhood.build(ids, vectors, AnnSettings(exact_max_items=100, neighbours=7))
    near.save(tmp_path)
    loaded = Neighbourhood.load(tmp_path)
    assert not loaded.index.exact and loaded.index.n_items == 3000
    assert np.array_equal(loaded.item_ids, ids) and np.array_equal(loaded.neighbours, near.neighbours)
    assert np.array_equal(loaded.scores, near.scores)
    assert np.array_equal(loaded.index.search(vectors[:5], 10)[1], near.index.search(vectors[:5], 10)[1])
    assert Neighbourhood.load(tmp_path / "elsewhere") is None
