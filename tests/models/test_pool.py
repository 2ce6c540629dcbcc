"""Pooled candidates (``models.pool``) against the dense rows they replace: every score a
feature reads is the dense rows' value, and the lists come from the same sources."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from flows.config import AnnSettings, CandidateSettings
from models.baselines import EASE, DecayedItemKNN, DecayedPopularity, minmax_rows
from models.candidates import top_unseen
from models.interactions import Interactions
from models.lm_score import normalise
from models import pool
from models.metrics import top_k
from models.pool import RowScores
from models.ranking_data import candidates, dense_lists, feature_names, ranks_of
from models.signals import Sources, read, select


def sparse_rows(rng, rows: int, n: int, density: float, negative: bool) -> sp.csr_matrix:
    values = rng.choice([0.25, 0.5, 1.0, 2.0] + ([-1.0, -0.5] if negative else []), size=(rows, n)).astype(np.float32)
    values[rng.random((rows, n)) > density] = 0.0  # ties everywhere: few distinct values
    m = sp.csr_matrix(values)
    m.eliminate_zeros()
    return m


@pytest.mark.parametrize("negative", [False, True])
@pytest.mark.parametrize("density", [0.0, 0.05, 0.5, 1.0])
def test_row_scores_are_the_dense_rows_scaled_ranked_and_topped(negative, density):
    rng = np.random.default_rng(int(density * 100) + negative)
    m = sparse_rows(rng, 6, 40, density, negative)
    dense = minmax_rows(m.toarray())
    scores = RowScores.minmax(m, 40)
    columns = rng.integers(0, 40, (6, 15))
    assert np.array_equal(scores.at(columns), np.take_along_axis(dense, columns, axis=1))
    assert np.array_equal(scores.ranks(columns), ranks_of(dense, columns))
    exclude = sp.csr_matrix(rng.random((6, 40)) < 0.2, dtype=np.float32)
    exclude.sort_indices()
    top = scores.top(5, exclude)
    # The dense top-N, cut where the rest of the catalogue (the fill value) begins.
    expected = top_unseen(dense, exclude, 5)
    for r in range(6):
        above = expected[r][dense[r, expected[r]] > scores.fill[r]]
        assert np.array_equal(top[r][top[r] >= 0], above)


def test_dense_columns_scale_over_the_whole_catalogue():
    rng = np.random.default_rng(1)
    kept = np.array([2, 5, 7])
    values = rng.normal(size=(4, 3)).astype(np.float32)
    full = np.zeros((4, 10), np.float32)
    full[:, kept] = values
    scores = RowScores.dense_columns(values, kept, 10)
    assert np.array_equal(scores.at(np.tile(np.arange(10), (4, 1))), minmax_rows(full))


@pytest.fixture(scope="module")
def catalogue():
    """A skewed log over 3,000 items with clustered 16-d item vectors."""
    rng = np.random.default_rng(0)
    n = 30_000
    events = pd.DataFrame({"user_id": rng.integers(0, 400, n), "item_id": (rng.pareto(1.2, n) * 60).astype(int) % 3000,
                           "timestamp": pd.to_datetime(1.6e9 + rng.uniform(0, 3e7, n), unit="s", utc=True),
                           "event_type": "rating", "value": 1.0})
    data = Interactions.from_events(events)
    centres = rng.normal(size=(30, 16))
    vectors = normalise((centres[rng.integers(30, size=data.n_items)] + 0.3 * rng.normal(size=(data.n_items, 16))).astype(np.float32))
    vectors[:3] = 0.0  # items without text
    pop = DecayedPopularity(half_life_days=30.0).fit(data).score(np.zeros(1, np.int64))[0]
    sources = Sources(DecayedItemKNN(k=50, half_life_days=30.0).fit(data), EASE(reg=50.0, max_items=800).fit(data), vectors, 5)
    profiles = normalise(rng.normal(size=(data.n_users, 16)).astype(np.float32))
    return data, sources, pop, profiles


@pytest.mark.parametrize("repeats", [False, True])
def test_pooled_candidates_have_the_dense_features_and_lists(catalogue, repeats):
    """With exact search, pooled and dense candidates share the EASE, LM and popularity lists
    and every candidate both propose has the same features; the CF list differs only where
    ``cf + alpha x LM`` is ranked over the proposals rather than over every item."""
    data, sources, pop, profiles = catalogue
    cfg = CandidateSettings(cf=30, ease=20, lm=10, pop=10, ann=AnnSettings(exact_max_items=10**9))
    pooled_sources = sources.with_index(cfg)
    assert pooled_sources.near.index.exact
    hist = select(data, np.arange(data.n_users))
    state = (pop, np.zeros((data.n_users, 2), np.float32), np.ones(data.n_users), data.now, repeats)
    dense = read(hist, sources.scores(hist, profiles), *state)
    pooled = read(hist, pooled_sources.pooled(hist, profiles), *state)
    item_share = np.zeros((data.n_items, 2), np.float32)
    d_items, _, d_features = candidates(dense, item_share, pop, pop, 0.5, cfg)
    p_items, _, p_features = candidates(pooled, item_share, pop, pop, 0.5, cfg)
    assert p_features.shape[-1] == len(feature_names(repeats))
    from models import pool

    d_lists, p_lists = dense_lists(dense, 0.5, cfg), pool.lists(pooled.pooled, pooled.exclude, 0.5, cfg)
    for name, d, p in zip(("cf", "ease", "lm"), d_lists, p_lists):
        same = np.mean([np.isin(a[a >= 0], b).mean() for a, b in zip(p, d) if (a >= 0).any()])
        assert same >= (0.75 if name == "cf" else 0.99), f"{name}: {same:.3f} of the pooled list is in the dense one"
    # Which list proposed a candidate first may differ; every other feature may not.
    same = [j for j, name in enumerate(feature_names(repeats)) if not name.startswith("from_")]
    for r in range(data.n_users):
        common, a, b = np.intersect1d(d_items[r], p_items[r], return_indices=True)
        keep = common >= 0
        np.testing.assert_allclose(p_features[r, b[keep]][:, same], d_features[r, a[keep]][:, same], atol=1e-6, err_msg=f"row {r}")
        if not repeats:
            assert not np.isin(p_items[r][p_items[r] >= 0], hist.items[hist.users == r]).any(), "a seen item is a candidate"


def test_the_pooled_cf_list_ranks_its_items_as_the_dense_cf_plus_alpha_lm_does(catalogue):
    # The LM cosine is scaled by its row's extremes over the whole catalogue, as minmax_rows
    # scales the dense row: scaled over the proposals alone, the weight of alpha x LM
    # against CF changed per user, and with it the order.
    data, sources, pop, profiles = catalogue
    cfg = CandidateSettings(cf=30, ease=20, lm=10, pop=10, ann=AnnSettings(exact_max_items=10**9))
    hist = select(data, np.arange(data.n_users))
    state = (pop, np.zeros((data.n_users, 2), np.float32), np.ones(data.n_users), data.now, False)
    dense = read(hist, sources.scores(hist, profiles), *state)
    pooled = read(hist, sources.with_index(cfg).pooled(hist, profiles), *state)
    for alpha in (0.25, 2.0):
        combined = dense.cf + np.float32(alpha) * minmax_rows(dense.lm)
        cf_list = pool.lists(pooled.pooled, pooled.exclude, alpha, cfg)[0]
        for r in range(data.n_users):
            mine = cf_list[r][cf_list[r] >= 0]
            expected = sorted(mine, key=lambda c: (-combined[r, c], c))
            assert list(mine) == expected, f"row {r}, alpha {alpha}"


def test_pooled_views_from_the_training_history_use_the_index_above_the_exact_size(catalogue):
    data, sources, pop, profiles = catalogue
    exact = CandidateSettings(ann=AnnSettings(exact_max_items=data.n_items))
    assert not exact.pooled(data.n_items) and CandidateSettings(ann=AnnSettings(exact_max_items=data.n_items - 1)).pooled(data.n_items)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 30), st.integers(1, 5), st.integers(1, 35), st.data())
def test_first_unseen_is_top_k_of_the_popularity_rows(n_items, rows, n, data):
    # Few distinct values: ties broken by column, as top_k breaks them; rows that have
    # seen most of the catalogue come back padded.
    pop = np.array(data.draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0]), min_size=n_items, max_size=n_items)), np.float32)
    seen = np.array(data.draw(st.lists(st.booleans(), min_size=rows * n_items, max_size=rows * n_items))).reshape(rows, n_items)
    exclude = sp.csr_matrix(seen.astype(np.float32))
    order = np.argsort(-pop, kind="stable")
    expected = top_k(np.broadcast_to(pop, (rows, n_items)), exclude, n)
    np.testing.assert_array_equal(pool.first_unseen(order, exclude, rows, n)[:, : expected.shape[1]], expected)
    assert (pool.first_unseen(order, exclude, rows, n)[:, expected.shape[1]:] == -1).all()
    np.testing.assert_array_equal(pool.first_unseen(order, None, rows, n)[:, : expected.shape[1]], top_k(np.broadcast_to(pop, (rows, n_items)), None, n))
