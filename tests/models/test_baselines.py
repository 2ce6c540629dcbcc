"""Tests of models.baselines on tiny hand-built interactions with hand-computed scores."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import models.baselines as baselines
from features.contract import TIMESTAMP_DTYPE
from features.learned_decay import LearnedDecay, holdout_mask
from models.baselines import (
    EASE,
    MODELS,
    SAR,
    CombinedScorer,
    DecayedItemKNN,
    DecayedPopularity,
    ItemKNN,
    Popularity,
    cosine_topk,
    decay,
    latest_decay_matrix,
    minmax_rows,
    similarity_of,
    spd_inverse,
    user_half_lives,
)
from features.decay import SECONDS_PER_DAY
from models.factory import make
from models.interactions import Interactions

T0 = 1_000_000_000  # epoch seconds of day 0


def interactions(events: list[tuple]) -> Interactions:
    """Interactions from (user, item, day) or (user, item, day, value) tuples."""
    rows = [(*e, 1.0) if len(e) == 3 else e for e in events]
    users, items, days, values = zip(*rows)
    seconds = T0 + np.round(np.array(days, dtype=np.float64) * SECONDS_PER_DAY).astype("int64")
    frame = pd.DataFrame(
        {
            "user_id": np.array(users, dtype="int64"),
            "item_id": np.array(items, dtype="int64"),
            "event_type": ["rating"] * len(rows),
            "value": np.array(values, dtype="float64"),
            "timestamp": pd.to_datetime(seconds, unit="s", utc=True).astype(TIMESTAMP_DTYPE),
        }
    )
    return Interactions.from_events(frame)


def all_rows(data: Interactions) -> np.ndarray:
    return np.arange(data.n_users)


# Four users, three items (users 0-3 and items 0-2 are also rows and columns):
#   u0: i0 i1 / u1: i0 i1 i2 / u2: i0 / u3: i2
# counts n0 = 3, n1 = 2, n2 = 2; co-occurrences c01 = 2, c02 = 1, c12 = 1.
SMALL = [(0, 0, 0), (0, 1, 0), (1, 0, 0), (1, 1, 0), (1, 2, 0), (2, 0, 0), (3, 2, 0)]
COS01 = 2 / math.sqrt(3 * 2)
COS02 = 1 / math.sqrt(3 * 2)
COS12 = 1 / math.sqrt(2 * 2)


def random_interactions(seed: int = 0, users: int = 30, items: int = 15, events: int = 200) -> Interactions:
    rng = np.random.default_rng(seed)
    return interactions(
        list(
            zip(
                rng.integers(0, users, events).tolist(),
                rng.integers(0, items, events).tolist(),
                rng.uniform(0, 100, events).tolist(),
                rng.integers(1, 6, events).astype(float).tolist(),
            )
        )
    )


# ---------------------------------------------------------------- contract and registry


def test_registry_names_match_classes_and_make_passes_params() -> None:
    assert set(MODELS) == {"pop", "pop_decay", "itemknn", "itemknn_decay", "sar", "ease", "combined"}
    for name, model in MODELS.items():
        assert model.name == name
    knn = make("itemknn", k=5, shrink=2.0)
    assert isinstance(knn, ItemKNN) and (knn.k, knn.shrink) == (5, 2.0)
    assert make("ease").reg == 250.0
    with pytest.raises(ValueError, match="unknown model"):
        make("nope")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_scores_float32_rows_in_the_order_asked(name: str) -> None:
    data = random_interactions()
    model = make(name).fit(data)
    scores = model.score(np.array([3, 0, 7]))
    assert scores.dtype == np.float32 and scores.shape == (3, data.n_items)
    assert np.all(np.isfinite(scores))
    np.testing.assert_array_equal(scores, model.score(all_rows(data))[[3, 0, 7]])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_fitting_twice_gives_identical_scores(name: str) -> None:
    data = random_interactions(seed=1)
    first = make(name).fit(data).score(all_rows(data))
    second = make(name).fit(data).score(all_rows(data))
    np.testing.assert_array_equal(first, second)


def test_scoring_in_batches_equals_scoring_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    data = random_interactions(seed=2)
    model = EASE(reg=5.0).fit(data)
    whole = model.score(all_rows(data))
    monkeypatch.setattr(baselines, "BATCH_ROWS", 4)
    np.testing.assert_array_equal(model.score(all_rows(data)), whole)


def test_scoring_before_fit_raises() -> None:
    with pytest.raises(RuntimeError, match="fitted"):
        ItemKNN().score(np.array([0]))


def test_scoring_rows_outside_the_fitting_data_raises() -> None:
    data = interactions(SMALL)
    model = Popularity().fit(data)
    for rows in (data.rows_of(np.array([99])), np.array([data.n_users])):
        with pytest.raises(ValueError, match="rows must lie"):
            model.score(rows)
    assert model.score(np.array([], dtype=np.int64)).shape == (0, data.n_items)


# ---------------------------------------------------------------- popularity


def test_popularity_counts_distinct_users() -> None:
    # Item 10 by three users (one of them twice), item 20 by one, item 30 by one.
    data = interactions([(1, 10, 0), (1, 20, 1), (2, 10, 2), (2, 10, 3), (2, 30, 4), (3, 10, 5)])
    scores = Popularity().fit(data).score(all_rows(data))
    np.testing.assert_array_equal(scores, np.tile([3.0, 1.0, 1.0], (3, 1)))


def test_decayed_popularity_halves_per_half_life_and_sums_events() -> None:
    # now = day 20. Item 0: day 20 (1) + day 13 (one half-life: 0.5);
    # item 1: day 6 (two half-lives: 0.25) + a repeat on day 20 by the same user (1).
    data = interactions([(1, 0, 20), (2, 0, 13), (1, 1, 6), (1, 1, 20)])
    scores = DecayedPopularity(half_life_days=7.0).fit(data).score(np.array([0]))
    np.testing.assert_allclose(scores, [[1.5, 1.25]], rtol=1e-6)


def test_decay_weighs_future_events_one() -> None:
    np.testing.assert_allclose(decay(np.array([-3.0, 0.0, 7.0, 14.0]), 7.0), [1.0, 1.0, 0.5, 0.25])
    with pytest.raises(ValueError):
        decay(np.array([1.0]), 0.0)


@pytest.mark.parametrize(
    ("kind", "extra", "expected"),
    [
        # now = day 20; ages 0, 7, 14, 0 with h = 7: linear 1 - age / 14.
        ("linear", {}, [1.0 + 0.5, 0.0 + 1.0]),
        # Windows [0, 7) weighs 3/4, [7, 30) 1/4: ages 0 and 0 -> 3/4, 7 and 14 -> 1/4.
        ("window", {"window_days": (7.0, 30.0), "window_weights": (3.0, 1.0)}, [0.75 + 0.25, 0.25 + 0.75]),
    ],
)
def test_decayed_popularity_takes_the_decay_kind(kind: str, extra: dict, expected: list[float]) -> None:
    data = interactions([(1, 0, 20), (2, 0, 13), (1, 1, 6), (1, 1, 20)])
    model = DecayedPopularity(half_life_days=7.0, decay=kind, **extra).fit(data)
    np.testing.assert_allclose(model.score(np.array([0])), [expected], rtol=1e-6)


def test_linear_decay_halves_at_the_half_life_and_forgets_at_twice_it() -> None:
    model = DecayedPopularity(decay="linear")
    np.testing.assert_allclose(model._weigh(np.array([-1.0, 0.0, 7.0, 14.0, 30.0]), 7.0), [1, 1, 0.5, 0, 0])


@pytest.mark.parametrize("model", ["pop_decay", "itemknn_decay", "sar"])
def test_unknown_decay_kinds_and_learned_non_exponential_decay_raise(model: str) -> None:
    with pytest.raises(ValueError, match="unknown decay 'cubic'"):
        make(model, decay="cubic")
    with pytest.raises(ValueError, match="weights must be non-negative"):
        make(model, decay="window", window_days=(7.0,), window_weights=(-1.0,))
    if model != "pop_decay":
        with pytest.raises(ValueError, match="learned half-life needs decay 'exponential'"):
            make(model, decay="linear", half_life_days="learned")


# ---------------------------------------------------------------- item-KNN


def test_itemknn_cosine_scores_sum_similarities_of_the_profile() -> None:
    data = interactions(SMALL)
    model = ItemKNN(k=250).fit(data)
    expected_w = np.array([[0, COS01, COS02], [COS01, 0, COS12], [COS02, COS12, 0]])
    np.testing.assert_allclose(model.similarity_.toarray(), expected_w, rtol=1e-5)
    # u0 holds i0 and i1: item j scores W[0, j] + W[1, j].
    np.testing.assert_allclose(
        model.score(np.array([0]))[0], [COS01, COS01, COS02 + COS12], rtol=1e-5
    )


def test_itemknn_shrink_enters_the_denominator() -> None:
    model = ItemKNN(k=250, shrink=1.0).fit(interactions(SMALL))
    assert model.similarity_[0, 1] == pytest.approx(2 / (math.sqrt(6) + 1), rel=1e-5)


def test_itemknn_keeps_top_k_neighbours_per_scored_item_column() -> None:
    # k = 1: column j keeps its one most similar item. Column 0: i1 (0.82 > 0.41);
    # column 1: i0 (0.82 > 0.5); column 2: i1 (0.5 > 0.41). No column keeps i2, so a user
    # holding only i2 (u3) gets nothing; pruning per row would have kept W[2, 1].
    model = ItemKNN(k=1).fit(interactions(SMALL))
    w = model.similarity_.toarray()
    expected = np.zeros((3, 3))
    expected[1, 0], expected[0, 1], expected[1, 2] = COS01, COS01, COS12
    np.testing.assert_allclose(w, expected, rtol=1e-5)
    np.testing.assert_array_equal(model.score(np.array([3])), np.zeros((1, 3), np.float32))
    np.testing.assert_allclose(model.score(np.array([2]))[0], [0, COS01, 0], rtol=1e-5)


def test_itemknn_ties_at_the_kth_neighbour_go_to_the_lower_item() -> None:
    # cos(0, 1) = cos(0, 2) = 1 / sqrt(2): with k = 1, column 0 keeps item 1.
    data = interactions([(0, 0, 0), (0, 1, 0), (1, 0, 0), (1, 2, 0), (2, 3, 0)])
    w = ItemKNN(k=1).fit(data).similarity_
    assert w[1, 0] == pytest.approx(1 / math.sqrt(2), rel=1e-5)
    assert w[2, 0] == 0.0


def recbole_reference(matrix: np.ndarray, k: int, shrink: float) -> np.ndarray:
    """RecBole's ComputeSimilarity, one column at a time (float32, as RecBole)."""
    matrix = matrix.astype(np.float32)
    n = matrix.shape[1]
    norms = np.sqrt((matrix**2).sum(axis=0))
    w_all = np.zeros((n, n), dtype=np.float32)
    for j in range(n):
        w = matrix.T @ matrix[:, j]
        w[j] = 0.0
        w = w / (norms[j] * norms + shrink + 1e-6)
        top = np.argsort(-w, kind="stable")[: min(k, n)]
        top = top[w[top] != 0.0]
        w_all[top, j] = w[top]
    return w_all


@pytest.mark.parametrize(("k", "shrink", "scale"), [(3, 0.0, 1.0), (5, 2.5, 1.0), (50, 0.0, 0.01)])
def test_cosine_topk_matches_recbole_column_by_column(k: int, shrink: float, scale: float) -> None:
    # Continuous values, so no ties: the top-k sets are unambiguous. At scale 0.01 the norms
    # are small enough for RecBole's 1e-6 in the denominator to show.
    rng = np.random.default_rng(7)
    dense = scale * rng.random((40, 12)) * (rng.random((40, 12)) < 0.4)
    got = cosine_topk(sp.csr_matrix(dense), k, shrink).toarray()
    np.testing.assert_allclose(got, recbole_reference(dense, k, shrink), rtol=1e-6, atol=0)
    assert ((got != 0).sum(axis=0) <= k).all()


# Decay fixture: u0 saw i0 thirty days before now and i1 now. i2 is i0's close neighbour
# (cos 0.82), i3 is i1's weaker one (cos 0.5); i0 and i3, i1 and i2 never co-occur.
DECAY = [
    (0, 0, 0), (0, 1, 30),
    (1, 0, 0), (1, 2, 0),
    (2, 0, 0), (2, 2, 0),
    (3, 1, 0), (3, 3, 0),
    (4, 3, 0),
]


def test_decayed_profile_ranks_the_recent_items_neighbour_first() -> None:
    data = interactions(DECAY)
    plain = ItemKNN().fit(data).score(np.array([0]))[0]
    decayed = DecayedItemKNN(half_life_days=7.0).fit(data).score(np.array([0]))[0]
    assert plain[2] > plain[3]  # without decay, the older item's closer neighbour wins
    assert decayed[3] > decayed[2]
    # Score ratio: (1 * cos13) / (2 ** (-30 / 7) * cos02).
    expected = 0.5 / (2 ** (-30 / 7) * (2 / math.sqrt(6)))
    assert decayed[3] / decayed[2] == pytest.approx(expected, rel=1e-5)


def test_decayed_profile_uses_the_latest_event_on_each_item() -> None:
    # u0 re-watches i0 on day 23: one half-life before now instead of 30 days.
    data = interactions([*DECAY, (0, 0, 23)])
    profile = latest_decay_matrix(data, 7.0).toarray()
    np.testing.assert_allclose(profile[0], [0.5, 1.0, 0.0, 0.0], rtol=1e-12)
    np.testing.assert_allclose(profile[1], [2 ** (-30 / 7), 0, 2 ** (-30 / 7), 0], rtol=1e-12)
    # From each user's latest event: u1's row is scaled by 2 ** (30 / 7), u0's unchanged.
    relative = latest_decay_matrix(data, 7.0, from_user_latest=True).toarray()
    np.testing.assert_allclose(relative[0], profile[0], rtol=1e-12)
    np.testing.assert_allclose(relative[1], [1.0, 0.0, 1.0, 0.0], rtol=1e-12)


def test_decayed_itemknn_keeps_ranking_users_whose_weights_would_underflow() -> None:
    # u9's events are ~3 years before now with a one-day half-life: 2 ** -1095 is 0 even in
    # float64, yet their ranking must still follow recency (i1 newer than i0).
    old = [(9, 0, 0), (9, 1, 1)]
    data = interactions([*[(u, i, 1100) for u, i, _ in DECAY], *old])
    assert latest_decay_matrix(data, 1.0).toarray()[data.rows_of(np.array([9]))[0]].max() == 0.0
    row = data.rows_of(np.array([9]))
    scores = DecayedItemKNN(half_life_days=1.0).fit(data).score(row)[0]
    assert scores[3] > scores[2] > 0


def test_decay_kind_changes_the_itemknn_profile_from_the_users_latest_event() -> None:
    # u0: i0 thirty days before its latest event (i1). Linear at h = 7 forgets i0 entirely,
    # windows of 7 / 60 days keep it at the second weight; exponential keeps 2 ** (-30 / 7).
    data = interactions(DECAY)
    row = data.rows_of(np.array([0]))
    profiles = {
        kind: DecayedItemKNN(half_life_days=7.0, decay=kind, window_days=(7.0, 60.0), window_weights=(2.0, 1.0))
        .fit(data)
        .profile_[row]
        .toarray()[0]
        for kind in ("exponential", "linear", "window")
    }
    np.testing.assert_allclose(profiles["exponential"][:2], [2 ** (-30 / 7), 1.0], rtol=1e-6)
    np.testing.assert_allclose(profiles["linear"][:2], [0.0, 1.0])
    np.testing.assert_allclose(profiles["window"][:2], [1 / 3, 2 / 3], rtol=1e-6)
    linear_scores = DecayedItemKNN(half_life_days=7.0, decay="linear").fit(data).score(row)[0]
    assert linear_scores[2] == 0.0 and linear_scores[3] > 0  # only the recent item's neighbour


def test_sar_affinity_takes_the_decay_kind() -> None:
    # u0's events are 0, 30 and 60 days old; linear at h = 30: 1, 0.5, 0.
    model = SAR(half_life_days=30.0, decay="linear").fit(sar_data())
    np.testing.assert_allclose(model.affinity_.toarray()[0], [1.0, 0.5, 0.0], rtol=1e-12)


# ---------------------------------------------------------------- SAR


J01, J02, J12 = 2 / (3 + 2 - 2), 1 / (3 + 2 - 1), 1 / (2 + 2 - 1)


def sar_data() -> Interactions:
    # SMALL's pairs, timed: now = day 60. u0: i0 now (weight 1), i1 thirty days ago (0.5)
    # and again sixty days ago (0.25), so A[u0] = [1, 0.75, 0]; values 4, 2, 2.
    events = [(0, 0, 60, 4.0), (0, 1, 30, 2.0), (0, 1, 0, 2.0)]
    events += [(u, i, 60, 1.0) for u, i, _ in SMALL if u != 0]
    return interactions(events)


def test_sar_jaccard_similarity_and_decayed_affinity() -> None:
    model = SAR(half_life_days=30.0).fit(sar_data())
    expected_s = np.array([[1, J01, J02], [J01, 1, J12], [J02, J12, 1]])
    np.testing.assert_allclose(model.similarity_, expected_s, rtol=1e-6)
    np.testing.assert_allclose(model.affinity_.toarray()[0], [1.0, 0.75, 0.0], rtol=1e-12)
    np.testing.assert_allclose(
        model.score(np.array([0]))[0],
        [1 + 0.75 * J01, J01 + 0.75, J02 + 0.75 * J12],
        rtol=1e-6,
    )


def test_sar_weighs_by_value_when_asked() -> None:
    model = SAR(half_life_days=30.0, weight_by_value=True).fit(sar_data())
    # 4 * 1, 2 * 0.5 + 2 * 0.25
    np.testing.assert_allclose(model.affinity_.toarray()[0], [4.0, 1.5, 0.0], rtol=1e-12)


def test_sar_lift_cooccurrence_and_threshold() -> None:
    data = sar_data()
    lift = SAR(similarity="lift").fit(data).similarity_
    assert lift[0, 1] == pytest.approx(2 / (3 * 2)) and lift[1, 2] == pytest.approx(1 / 4)
    counts = SAR(similarity="cooccurrence").fit(data).similarity_
    np.testing.assert_array_equal(counts, [[3, 2, 1], [2, 2, 1], [1, 1, 2]])
    # threshold 2 drops the single co-occurrences (c02, c12).
    pruned = SAR(threshold=2).fit(data).similarity_
    np.testing.assert_allclose(pruned, [[1, J01, 0], [J01, 1, 0], [0, 0, 1]], rtol=1e-6)
    with pytest.raises(ValueError):
        SAR(similarity="cosine").fit(data)


# ---------------------------------------------------------------- EASE


def test_ease_matches_a_direct_numpy_computation_with_zero_diagonal() -> None:
    data = random_interactions(seed=3)
    model = EASE(reg=4.0).fit(data)
    x = data.matrix().toarray().astype(np.float64)
    p = np.linalg.inv(x.T @ x + 4.0 * np.eye(data.n_items))
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    assert np.all(np.diag(model.weights_) == 0.0)
    np.testing.assert_allclose(model.weights_, b, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(model.score(all_rows(data)), x @ b, rtol=1e-5, atol=1e-6)


def test_ease_capped_to_the_most_used_items_is_ease_on_those_items_and_zero_elsewhere() -> None:
    data = random_interactions(seed=4)
    counts = np.asarray(data.matrix().sum(axis=0)).ravel()
    kept = np.sort(np.argsort(-counts, kind="stable")[:5])
    capped = EASE(reg=4.0, max_items=5).fit(data)
    x = data.matrix().toarray().astype(np.float64)[:, kept]
    p = np.linalg.inv(x.T @ x + 4.0 * np.eye(5))
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    scores = capped.score(all_rows(data))
    assert scores.shape == (data.n_users, data.n_items)
    np.testing.assert_allclose(scores[:, kept], x @ b, rtol=1e-5, atol=1e-6)
    assert np.all(np.delete(scores, kept, axis=1) == 0.0)
    np.testing.assert_array_equal(capped.score_histories(data), scores)
    uncapped = EASE(reg=4.0, max_items=data.n_items).fit(data)
    np.testing.assert_array_equal(uncapped.score(all_rows(data)), EASE(reg=4.0).fit(data).score(all_rows(data)))


def test_ease_recovers_a_cooccurrence_pattern() -> None:
    # Items 0 and 1 always together (5 users), items 2 and 3 always together (3 users).
    # G is block diagonal, so B[0, 1] = 5 / (5 + reg) and B[0, 2] = 0.
    events = [(u, i, 0) for u in range(5) for i in (0, 1)]
    events += [(u, i, 0) for u in range(5, 8) for i in (2, 3)]
    events += [(8, 0, 0)]  # a user with item 0 alone
    data = interactions(events)
    model = EASE(reg=1.0).fit(data)
    # With user 8, n0 = 6: G = [[7, 5], [5, 6]] -> B[0, 1] = 5 / 7, B[1, 0] = 5 / 6.
    assert model.weights_[0, 1] == pytest.approx(5 / 7, rel=1e-5)
    assert model.weights_[1, 0] == pytest.approx(5 / 6, rel=1e-5)
    assert model.weights_[2, 3] == pytest.approx(3 / 4, rel=1e-5)
    assert np.all(model.weights_[:2, 2:] == 0) and np.all(model.weights_[2:, :2] == 0)
    scores = model.score(data.rows_of(np.array([8])))[0]
    assert np.argmax(np.where([False, True, True, True], scores, -np.inf)) == 1


def test_spd_inverse_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(30, 30))
    g = a @ a.T + 30 * np.eye(30)
    np.testing.assert_allclose(spd_inverse(g.copy()), np.linalg.inv(g), rtol=1e-10, atol=1e-14)
    with pytest.raises(np.linalg.LinAlgError):
        spd_inverse(-np.eye(3))


# ---------------------------------------------------------------- combined scorer


def test_minmax_rows_maps_each_row_to_unit_range_and_constant_rows_to_zero() -> None:
    got = minmax_rows(np.array([[2.0, 4.0, 3.0], [5.0, 5.0, 5.0]], dtype=np.float32))
    np.testing.assert_array_equal(got, [[0.0, 1.0, 0.5], [0.0, 0.0, 0.0]])


def ranking(scores: np.ndarray) -> np.ndarray:
    return np.argsort(-scores, axis=1, kind="stable")


def test_combined_with_alpha_zero_or_no_hook_ranks_as_its_base() -> None:
    data = random_interactions(seed=4)
    base = DecayedItemKNN(half_life_days=10.0).fit(data).score(all_rows(data))

    def must_not_be_called(rows: np.ndarray) -> np.ndarray:
        raise AssertionError("lm_scores called with alpha = 0")

    for combined in (
        CombinedScorer(DecayedItemKNN(half_life_days=10.0)),
        CombinedScorer(DecayedItemKNN(half_life_days=10.0), alpha=0.0, lm_scores=must_not_be_called),
        CombinedScorer(DecayedItemKNN(half_life_days=10.0), alpha=0.7, lm_scores=None),
    ):
        scores = combined.fit(data).score(all_rows(data))
        np.testing.assert_array_equal(ranking(scores), ranking(base))
        assert scores.min() >= 0.0 and scores.max() <= 1.0


def test_combined_is_moved_by_lm_scores_when_alpha_is_positive() -> None:
    data = interactions(DECAY)
    n = data.n_items
    seen_rows: list[np.ndarray] = []

    def lm(rows: np.ndarray) -> np.ndarray:
        seen_rows.append(rows)
        scores = np.zeros((len(rows), n), dtype=np.float32)
        scores[:, 2] = 10.0  # the LM loves item 2
        return scores

    rows = np.array([0])
    base = CombinedScorer(DecayedItemKNN(half_life_days=7.0)).fit(data).score(rows)[0]
    assert base[3] > base[2]
    combined = CombinedScorer(DecayedItemKNN(half_life_days=7.0), alpha=2.0, lm_scores=lm).fit(data)
    scores = combined.score(rows)[0]
    assert scores[2] > scores[3]
    np.testing.assert_allclose(scores, base + 2.0 * np.array([0, 0, 1, 0]), rtol=1e-6)
    np.testing.assert_array_equal(seen_rows[-1], rows)


def test_combined_rejects_lm_scores_of_the_wrong_shape() -> None:
    data = interactions(DECAY)
    model = CombinedScorer(alpha=1.0, lm_scores=lambda rows: np.zeros((len(rows), 2))).fit(data)
    with pytest.raises(ValueError, match="shape"):
        model.score(np.array([0]))


# ---------------------------------------------------------------- learned decay

# An infinitely sure prior centred on 7 days: "learned" must then be the fixed 7-day model.
CERTAIN_7 = LearnedDecay(global_half_life_days=7.0, prior_strength=math.inf)


@pytest.mark.parametrize("model", [DecayedItemKNN, SAR])
def test_learned_decay_with_a_certain_prior_is_the_fixed_half_life(model) -> None:
    data = random_interactions(seed=3)
    fixed = model(half_life_days=7.0).fit(data)
    learned = model(half_life_days="learned", learned_decay=CERTAIN_7).fit(data)
    np.testing.assert_allclose(learned.half_lives_, 7.0, rtol=1e-12)
    np.testing.assert_allclose(learned.score(all_rows(data)), fixed.score(all_rows(data)), rtol=1e-5)
    np.testing.assert_allclose(fixed.half_lives_, 7.0)
    assert fixed.learned_ is None and learned.learned_ is not None


def test_learned_itemknn_profile_uses_each_users_own_half_life() -> None:
    data = random_interactions(seed=4)
    model = DecayedItemKNN(k=5, half_life_days="learned").fit(data)
    hl = model.half_lives_
    assert hl.shape == (data.n_users,) and np.all(np.isfinite(hl)) and np.all(hl > 0)
    assert len(np.unique(np.round(hl, 9))) > 1  # per user, not one global value
    expected = latest_decay_matrix(data, hl, from_user_latest=True).toarray()
    np.testing.assert_allclose(model.profile_.toarray(), expected, rtol=1e-6)
    np.testing.assert_allclose(model.learned_.of(np.arange(data.n_users)), hl)


def test_learned_sar_affinity_decays_each_user_at_their_half_life() -> None:
    data = random_interactions(seed=5)
    model = SAR(half_life_days="learned").fit(data)
    weights = decay(data.age_days(), model.half_lives_[data.users])
    expected = sp.csr_matrix((weights, (data.users, data.items)), shape=(data.n_users, data.n_items)).toarray()
    np.testing.assert_allclose(model.affinity_.toarray(), expected, rtol=1e-12)


def test_learned_decay_settings_come_as_a_dict_from_yaml() -> None:
    data = random_interactions(seed=6)
    settings = {"global_half_life_days": 30.0, "prior_strength": math.inf, "grid_days": [1, 10, 100]}
    learned = make("sar", half_life_days="learned", learned_decay=settings).fit(data)
    np.testing.assert_allclose(learned.score(all_rows(data)), SAR(half_life_days=30.0).fit(data).score(all_rows(data)), rtol=1e-5)


def test_unknown_half_life_strings_and_non_positive_values_raise() -> None:
    data = random_interactions()
    for model in (DecayedItemKNN, SAR):
        with pytest.raises(ValueError, match="learned"):
            model(half_life_days="auto").fit(data)
        with pytest.raises(ValueError, match="positive"):
            model(half_life_days=0.0).fit(data)


def test_learned_half_lives_fit_the_transition_on_history_only() -> None:
    data = random_interactions(seed=7)
    config = LearnedDecay(holdout=0.25)
    seen: list[sp.csr_matrix] = []

    def transition(history: sp.csr_matrix) -> np.ndarray:
        seen.append(history)
        return cosine_topk(history, 5).toarray()

    half_lives, fit = user_half_lives(data, "learned", config, transition)
    held = holdout_mask(data.users, data.seconds, 0.25)
    pairs = set(zip(data.users[~held].tolist(), data.items[~held].tolist()))
    assert set(zip(*seen[0].nonzero())) == pairs  # the targets' pairs are not in it (unless repeated)
    assert half_lives.shape == (data.n_users,) and fit is not None


@pytest.mark.parametrize("model", [DecayedItemKNN, SAR])
def test_learned_models_are_deterministic(model) -> None:
    data = random_interactions(seed=8)
    first = model(half_life_days="learned").fit(data).score(all_rows(data))
    np.testing.assert_array_equal(first, model(half_life_days="learned").fit(data).score(all_rows(data)))


def test_refits_on_the_same_events_reuse_the_similarity_and_score_as_fresh_fits() -> None:
    data = random_interactions(seed=3)
    first = DecayedItemKNN(k=5, half_life_days=7.0).fit(data)
    second = DecayedItemKNN(k=5, half_life_days=90.0).fit(data)
    assert second.similarity_ is first.similarity_
    other_k = DecayedItemKNN(k=3, half_life_days=90.0).fit(data)
    assert other_k.similarity_ is not first.similarity_
    baselines._similarities.clear()
    fresh = DecayedItemKNN(k=5, half_life_days=90.0).fit(data)
    assert fresh.similarity_ is not first.similarity_
    np.testing.assert_array_equal(second.score(all_rows(data)), fresh.score(all_rows(data)))
    sar = [SAR(half_life_days=h).fit(data) for h in (7.0, 30.0)]
    assert sar[1].similarity_ is sar[0].similarity_
    assert SAR(similarity="lift").fit(data).similarity_ is not sar[0].similarity_


def test_a_similarity_is_recomputed_for_other_events_and_dropped_with_them() -> None:
    calls = []
    data, copy = random_interactions(seed=4), random_interactions(seed=4)
    compute = lambda: calls.append(1) or np.ones(3, np.float32)  # noqa: E731
    similarity_of(data, ("test",), compute)
    similarity_of(data, ("test",), compute)
    similarity_of(copy, ("test",), compute)  # equal events, another object: no identity, no reuse
    assert len(calls) == 2
    before = len(baselines._similarities)
    del copy
    assert len(baselines._similarities) == before - 1


def test_the_similarity_cache_keeps_to_its_byte_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(baselines, "_CACHE_BYTES", 100)
    baselines._similarities.clear()
    kept = [random_interactions(seed=s) for s in range(3)]
    for data in kept:
        similarity_of(data, ("test",), lambda: np.zeros(20, np.float32))  # 80 bytes each
    assert len(baselines._similarities) == 1
    assert similarity_of(kept[-1], ("test",), lambda: pytest.fail("recomputed")) is not None


def test_own_items_ranks_the_users_own_items_most_and_latest_first_then_the_crowd():
    from models.factory import make

    day = 86_400
    events = pd.DataFrame({
        "user_id": [1, 1, 1, 1, 2, 2, 3],
        "item_id": [10, 10, 11, 12, 13, 13, 13],
        "event_type": "purchase", "value": 1.0,
        # user 1: 10 twice long ago, 11 once lately, 12 once long ago; 13 is the crowd's favourite
        "timestamp": pd.to_datetime([0, day, 100 * day, 2 * day, 99 * day, 100 * day, 100 * day], unit="s", utc=True),
    })
    data = Interactions.from_events(events)
    model = make("own_items", half_life_days=30.0).fit(data)
    scores = model.score(data.rows_of(np.array([1, 3])))
    order = [data.item_ids[c] for c in np.argsort(-scores[0], kind="stable")]
    assert order == [11, 10, 12, 13]  # own, the latest first; then the crowd
    assert [data.item_ids[c] for c in np.argsort(-scores[1], kind="stable")][0] == 13
    assert scores[1][data.columns_of(np.array([10]))[0]] < 1.0 <= scores[1][data.columns_of(np.array([13]))[0]]
