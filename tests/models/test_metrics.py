"""Tests of models.metrics against hand-computed cases (arithmetic in the comments)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from models.metrics import (
    active_users,
    cold_users,
    coverage,
    intra_list_diversity,
    item_event_counts,
    long_tail_items,
    long_tail_recall,
    novelty,
    popularity_share,
    ranking_metrics,
    summarise,
    top_k,
    user_event_counts,
)

INV_LOG2_3 = 1 / math.log2(3)  # discount of rank 2: 0.6309...
INV_LOG2_5 = 1 / math.log2(5)  # discount of rank 4: 0.4307...


def csr(rows: list[list[int]], n_items: int) -> sp.csr_matrix:
    """Binary user x item matrix from per-user item lists."""
    dense = np.zeros((len(rows), n_items), dtype=np.float32)
    for user, items in enumerate(rows):
        dense[user, items] = 1.0
    return sp.csr_matrix(dense)


# ----------------------------------------------------------------------------- top_k


def test_top_k_equal_scores_lower_index_first():
    # Scores 3 at items 1, 2, 4: the two best are the lowest of the tied columns, 1 and 2.
    scores = np.array([[1.0, 3.0, 3.0, 2.0, 3.0]])
    assert top_k(scores, None, 2).tolist() == [[1, 2]]


def test_top_k_tie_straddling_the_cutoff_takes_lowest_columns():
    # 9 (item 4) and 5 (item 0) are certain; the third slot is a tie at 2 between items
    # 1, 2, 3 -> item 1. Also with the ties placed after the winners in the row.
    assert top_k(np.array([[5.0, 2.0, 2.0, 2.0, 9.0]]), None, 3).tolist() == [[4, 0, 1]]
    assert top_k(np.array([[2.0, 2.0, 7.0, 2.0, 2.0, 7.0]]), None, 3).tolist() == [[2, 5, 0]]


def test_top_k_many_ties_block_is_the_lowest_columns():
    # 200 equal scores except item 150 (best): list = 150, then 0..8.
    scores = np.zeros((1, 200), dtype=np.float32)
    scores[0, 150] = 1.0
    assert top_k(scores, None, 10).tolist() == [[150, 0, 1, 2, 3, 4, 5, 6, 7, 8]]


def test_top_k_never_returns_excluded_items():
    # Best items 0 (9) and 2 (7) are excluded; the rest in order: 1 (8), 3 (6).
    scores = np.array([[9.0, 8.0, 7.0, 6.0], [1.0, 2.0, 3.0, 4.0]])
    exclude = csr([[0, 2], [3]], 4)
    assert top_k(scores, exclude, 2).tolist() == [[1, 3], [2, 1]]


def test_top_k_explicit_zero_in_exclude_does_not_exclude():
    exclude = sp.csr_matrix((np.array([0.0]), (np.array([0]), np.array([0]))), shape=(1, 3))
    assert top_k(np.array([[5.0, 1.0, 0.0]]), exclude, 1).tolist() == [[0]]


def test_top_k_pads_with_minus_one_when_too_few_rankable_items():
    # 3 items, k = 5 -> width min(5, 3) = 3; item 1 excluded -> 2 rankable: 2 (0.9), 0 (0.5).
    scores = np.array([[0.5, 0.7, 0.9]])
    result = top_k(scores, csr([[1]], 3), 5)
    assert result.shape == (1, 3)
    assert result.tolist() == [[2, 0, -1]]


def test_top_k_minus_inf_scores_are_unrankable():
    scores = np.array([[-np.inf, 1.0, -np.inf, 0.0]])
    assert top_k(scores, None, 4).tolist() == [[1, 3, -1, -1]]


def test_top_k_user_without_history_gets_lowest_columns():
    # An all-zero row (no history) ranks every item equal: the lowest columns, in order.
    scores = np.zeros((2, 6), dtype=np.float32)
    scores[1] = [0, 0, 0, 0, 0, 1]
    assert top_k(scores, None, 3).tolist() == [[0, 1, 2], [5, 0, 1]]


def test_top_k_batches_agree_with_one_batch_and_k_zero():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 3, size=(7, 9)).astype(np.float32)
    exclude = sp.random(7, 9, density=0.3, format="csr", random_state=1)
    np.testing.assert_array_equal(
        top_k(scores, exclude, 4, batch_users=2), top_k(scores, exclude, 4, batch_users=100)
    )
    assert top_k(scores, None, 0).shape == (7, 0)


def test_top_k_rejects_nan_and_bad_shapes():
    with pytest.raises(ValueError, match="NaN"):
        top_k(np.array([[1.0, np.nan]]), None, 1)
    with pytest.raises(ValueError):
        top_k(np.zeros((2, 3)), csr([[0]], 3), 1)
    with pytest.raises(ValueError):
        top_k(np.zeros((2, 3)), None, -1)


@st.composite
def score_cases(draw):
    n_users = draw(st.integers(1, 6))
    n_items = draw(st.integers(1, 12))
    flat = st.lists(st.integers(0, 3), min_size=n_users * n_items, max_size=n_users * n_items)
    scores = np.array(draw(flat), dtype=np.int64).reshape(n_users, n_items)
    mask = st.lists(st.booleans(), min_size=n_users * n_items, max_size=n_users * n_items)
    excluded = np.array(draw(mask), dtype=bool).reshape(n_users, n_items)
    return scores, excluded, draw(st.integers(0, 15)), draw(st.integers(1, 4))


@settings(max_examples=300, deadline=None)
@given(score_cases())
def test_top_k_matches_full_stable_sort(case):
    # Few distinct values (0..3) on up to 12 items: ties at the cutoff in most cases.
    scores, excluded, k, batch = case
    n_users, n_items = scores.shape
    expected = np.full((n_users, min(k, n_items)), -1)
    for user in range(n_users):
        ranked = sorted(
            (item for item in range(n_items) if not excluded[user, item]),
            key=lambda item: (-scores[user, item], item),
        )[:k]
        expected[user, : len(ranked)] = ranked
    got = top_k(scores, sp.csr_matrix(excluded.astype(np.float32)), k, batch_users=batch)
    np.testing.assert_array_equal(got, expected)


# ------------------------------------------------------------------- ranking_metrics

# k = 4, 8 items. Per user: list, ground truth, and what the metrics must be.
LISTS = np.array(
    [
        [5, 2, 7, 1],  # u0: GT {1, 2}, hits at ranks 2 and 4, |GT| = 2 < K
        [0, 3, 6, 4],  # u1: GT {0, 3, 4, 5, 6, 7}, hits at ranks 1-4, |GT| = 6 > K
        [1, 2, 3, 4],  # u2: empty GT -> NaN everywhere
        [6, 5, -1, -1],  # u3: GT {0, 7}: no hit; -1 must not read as item 0 or item 7
        [7, -1, -1, -1],  # u4: GT {0, 7}: one item rankable, a hit at rank 1
        [4, 5, 6, 0],  # u5: GT {0}: hit at rank 4
    ]
)
TRUTH = csr([[1, 2], [0, 3, 4, 5, 6, 7], [], [0, 7], [0, 7], [0]], 8)
EXPECTED = {
    # hits / K with K = 4 (u4: 1/4 although only one item was listed)
    "precision": [2 / 4, 4 / 4, math.nan, 0.0, 1 / 4, 1 / 4],
    # hits / |GT|
    "recall": [2 / 2, 4 / 6, math.nan, 0.0, 1 / 2, 1 / 1],
    # u0: DCG = 1/log2(3) + 1/log2(5) = 1.06161, IDCG (2 hits) = 1 + 1/log2(3) = 1.63093
    # u1: 4 hits on top of min(6, 4) = 4 possible -> 1
    # u4: DCG = 1, IDCG (min(2, 4) = 2 hits) = 1.63093 -> 0.61315
    # u5: DCG = 1/log2(5), IDCG = 1 -> 0.43068
    "ndcg": [
        (INV_LOG2_3 + INV_LOG2_5) / (1 + INV_LOG2_3),
        1.0,
        math.nan,
        0.0,
        1 / (1 + INV_LOG2_3),
        INV_LOG2_5,
    ],
    "mrr": [1 / 2, 1.0, math.nan, 0.0, 1.0, 1 / 4],
    "hit": [1.0, 1.0, math.nan, 0.0, 1.0, 1.0],
}


def test_ranking_metrics_hand_computed():
    result = ranking_metrics(LISTS, TRUTH, 4)
    assert set(result) == {"precision", "recall", "ndcg", "mrr", "hit"}
    for name, expected in EXPECTED.items():
        np.testing.assert_allclose(result[name], expected, rtol=1e-12, err_msg=name)
    assert result["ndcg"][0] == pytest.approx(0.650921, abs=1e-6)  # 1.0616063 / 1.6309298


def test_ranking_metrics_cutoff_shorter_than_lists():
    # k = 2 looks at the first two entries only: u5's hit at rank 4 disappears,
    # u0 keeps its rank-2 hit: P = 1/2, R = 1/2, NDCG = (1/log2 3) / (1 + 1/log2 3) = 0.38685.
    result = ranking_metrics(LISTS, TRUTH, 2)
    assert result["hit"][5] == 0.0 and result["mrr"][5] == 0.0
    assert result["precision"][0] == 0.5 and result["recall"][0] == 0.5
    assert result["ndcg"][0] == pytest.approx(INV_LOG2_3 / (1 + INV_LOG2_3))
    # u1: 2 hits of 6, ideal of min(6, 2) = 2 -> NDCG 1, precision 2/2.
    assert result["ndcg"][1] == pytest.approx(1.0) and result["precision"][1] == 1.0


def test_ranking_metrics_precision_divides_by_k_beyond_list_width():
    # A list of width 2 (only 2 items in the catalogue) evaluated at k = 10: P = 1/10.
    result = ranking_metrics(np.array([[1, 0]]), csr([[1]], 2), 10)
    assert result["precision"][0] == pytest.approx(0.1)
    assert result["recall"][0] == 1.0 and result["ndcg"][0] == 1.0


def test_ranking_metrics_ideal_uses_k_not_list_width():
    # A 2-wide list at k = 3 with |GT| = 3: IDCG over min(3, 3) = 3 ranks, not 2.
    # DCG = 1 + 1/log2(3) = 1.63093; IDCG = 1 + 1/log2(3) + 1/log2(4) = 2.13093 -> 0.76536.
    result = ranking_metrics(np.array([[0, 1]]), csr([[0, 1, 2]], 4), 3)
    assert result["ndcg"][0] == pytest.approx((1 + INV_LOG2_3) / (1.5 + INV_LOG2_3))
    assert result["precision"][0] == pytest.approx(2 / 3)


def test_ranking_metrics_explicit_zero_truth_is_not_relevant():
    truth = sp.csr_matrix((np.array([0.0, 1.0]), (np.array([0, 0]), np.array([0, 2]))), shape=(1, 3))
    result = ranking_metrics(np.array([[0, 1, 2]]), truth, 3)
    # GT is {2} only: hit at rank 3, recall 1/1, MRR 1/3.
    assert result["recall"][0] == 1.0 and result["mrr"][0] == pytest.approx(1 / 3)


def test_summarise_skips_empty_ground_truth_and_applies_mask():
    result = ranking_metrics(LISTS, TRUTH, 4)
    # Precision over u0, u1, u3, u4, u5 (u2 is NaN): (0.5 + 1 + 0 + 0.25 + 0.25) / 5 = 0.4.
    assert summarise(result)["precision"] == pytest.approx(0.4)
    # Mask u0..u2: (0.5 + 1) / 2 = 0.75; MRR (0.5 + 1) / 2 = 0.75.
    mask = np.array([True, True, True, False, False, False])
    masked = summarise(result, mask)
    assert masked["precision"] == pytest.approx(0.75) and masked["mrr"] == pytest.approx(0.75)
    # Only the empty-GT user selected -> NaN, not 0.
    only_empty = np.array([False, False, True, False, False, False])
    assert math.isnan(summarise(result, only_empty)["recall"])
    with pytest.raises(ValueError):
        summarise(result, np.ones(3, dtype=bool))


# ------------------------------------------------------------------ beyond accuracy


def test_coverage():
    lists = np.array([[0, 1], [1, 2], [-1, -1]])
    # Distinct {0, 1, 2} of 10 items -> 0.3; first entry only: {0, 1} -> 0.2.
    assert coverage(lists, 10) == pytest.approx(0.3)
    assert coverage(lists, 10, k=1) == pytest.approx(0.2)


GENRES = np.array(
    [
        [1.0, 0.0, 0.0],  # item 0
        [3.0, 0.0, 0.0],  # item 1: same direction as item 0 (cosine 1 after normalising)
        [0.0, 1.0, 0.0],  # item 2: orthogonal to 0 and 1
        [1.0, 1.0, 0.0],  # item 3: cosine 1/sqrt(2) with items 0, 1 and 2
        [0.0, 0.0, 0.0],  # item 4: no genre -> cosine 0 with everything
    ]
)
ILD_LISTS = np.array([[0, 1, -1], [0, 2, -1], [0, 1, 2], [0, 3, 2], [0, 4, -1], [2, -1, -1]])
# u0: cos 1 -> 0.  u1: cos 0 -> 1.  u2: (1 + 0 + 0) / 3 -> 1 - 1/3.
# u3: (1/sqrt2 + 0 + 1/sqrt2) / 3 -> 1 - sqrt(2)/3 = 0.52860.  u4: cos 0 -> 1.  u5: no pair.
ILD_EXPECTED = [0.0, 1.0, 2 / 3, 1 - math.sqrt(2) / 3, 1.0, math.nan]


@pytest.mark.parametrize("vectors", [GENRES, sp.csr_matrix(GENRES)], ids=["dense", "sparse"])
def test_intra_list_diversity(vectors):
    np.testing.assert_allclose(intra_list_diversity(ILD_LISTS, vectors), ILD_EXPECTED, atol=1e-12)


def test_intra_list_diversity_cutoff():
    # k = 2 on u2 [0, 1, 2] keeps [0, 1]: identical directions -> 0.
    assert intra_list_diversity(ILD_LISTS[2:3], GENRES, k=2)[0] == pytest.approx(0.0, abs=1e-12)


def test_novelty():
    # -log2 of shares 0.5, 0.25, 0.25 = 1, 2, 2; item 3 has share 0 -> scored as the rarest
    # positive share 0.25 -> 2.
    share = np.array([0.5, 0.25, 0.25, 0.0])
    lists = np.array([[0, 1], [3, -1], [-1, -1], [0, 0]])
    np.testing.assert_allclose(novelty(lists, share), [1.5, 2.0, math.nan, 1.0])
    assert novelty(lists, share, k=1)[0] == pytest.approx(1.0)


def test_popularity_share_and_counts():
    # Items 0, 1, 1 (one explicit zero not counted) -> counts [1, 2, 0], shares [1/3, 2/3, 0].
    train = sp.csr_matrix(
        (np.array([1.0, 1.0, 1.0, 0.0]), (np.array([0, 0, 1, 1]), np.array([0, 1, 1, 2]))),
        shape=(2, 3),
    )
    assert item_event_counts(train).tolist() == [1, 2, 0]
    assert user_event_counts(train).tolist() == [2, 1]
    np.testing.assert_allclose(popularity_share(train), [1 / 3, 2 / 3, 0.0])


# ------------------------------------------------------------------------- segments


def test_cold_and_active_users():
    counts = np.array([0, 1, 3, 4, 4, 2, 9, 5, 6, 7])
    # Cold: fewer than 2 interactions -> users 0 (no history) and 1.
    assert np.flatnonzero(cold_users(counts, 2)).tolist() == [0, 1]
    # Top 20% of 10 users = 2 users: counts sorted desc 9, 7, ... -> cut 7 -> users 6, 9.
    assert np.flatnonzero(active_users(counts, 0.2)).tolist() == [6, 9]
    # Top 10% of 5 users = ceil(0.5) = 1 user, but two tie at 4: both are active.
    assert np.flatnonzero(active_users(np.array([0, 1, 3, 4, 4]), 0.1)).tolist() == [3, 4]


def test_long_tail_items_by_interactions():
    counts = np.array([10, 5, 3, 2, 0])  # total 20
    # Share held by the items before each (popularity order 0, 1, 2, 3, 4):
    # 0, 0.5, 0.75, 0.9, 1.0. Head = before < 0.2 -> item 0 only.
    assert long_tail_items(counts, 0.2).tolist() == [False, True, True, True, True]
    # Head 60%: before < 0.6 -> items 0 and 1.
    assert long_tail_items(counts, 0.6).tolist() == [False, False, True, True, True]
    # No head at 0; the unseen item stays tail even with the whole catalogue as head.
    assert long_tail_items(counts, 0.0).all()
    assert long_tail_items(counts, 1.0).tolist() == [False, False, False, False, True]


def test_long_tail_items_by_item_count_breaks_ties_by_column():
    # Top 40% of 5 items = 2 items: 0 and 1.
    assert long_tail_items(np.array([10, 5, 3, 2, 0]), 0.4, basis="items").tolist() == [
        False, False, True, True, True,
    ]
    # Top 25% of 4 = 1 item; items 1 and 2 tie at 5 -> the lower column, 1.
    assert long_tail_items(np.array([3, 5, 5, 1]), 0.25, basis="items").tolist() == [
        True, False, True, True,
    ]
    with pytest.raises(ValueError):
        long_tail_items(np.array([1]), 0.2, basis="nope")


def test_long_tail_recall():
    tail = np.array([False, True, True, True])  # item 0 is head
    lists = np.array([[0, 2, 3], [0, 1, 3]])
    truth = csr([[0, 1, 2], [0]], 4)
    # u0: tail GT {1, 2}, listed tail hit {2} -> 1/2 (the head hit on 0 does not count).
    # u1: no tail GT -> NaN.
    result = long_tail_recall(lists, truth, tail, 3)
    assert result[0] == pytest.approx(0.5)
    assert math.isnan(result[1])


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 5), st.integers(1, 40), st.integers(1, 45), st.data())
def test_top_k_float32_with_infinities_and_signed_zeros_matches_full_stable_sort(n_users, n_items, k, data):
    # +inf is a legal score, -inf unrankable, -0.0 ties with 0.0; wide rows, so that the
    # partition path (not the whole-row one) runs and ties straddle its cut.
    pool = [0.0, -0.0, 1.5, 2.0, np.inf, -np.inf]
    values = data.draw(st.lists(st.sampled_from(pool), min_size=n_users * n_items, max_size=n_users * n_items))
    scores = np.array(values, dtype=np.float32).reshape(n_users, n_items)
    expected = np.full((n_users, min(k, n_items)), -1)
    for user in range(n_users):
        ranked = sorted((i for i in range(n_items) if scores[user, i] != -np.inf), key=lambda i: (-scores[user, i], i))[:k]
        expected[user, : len(ranked)] = ranked
    np.testing.assert_array_equal(top_k(scores, None, k), expected)
