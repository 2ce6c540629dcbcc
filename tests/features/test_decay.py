"""Tests of features.decay and features.learned_decay: hand-computed decay values, learned decay."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from features.decay import SECONDS_PER_DAY, decay_weights, decayed_sums, event_weights, exponential, linear, time_windows
from features.learned_decay import LearnedDecay, category_transition, fit_user_half_lives, holdout_mask
from features.synthetic import SyntheticData, make_drift_dataset

T0 = 1_000_000_000.0  # epoch seconds of day 0
DAY = SECONDS_PER_DAY


# ---------------------------------------------------------------- decay functions


def test_exponential_halves_per_half_life_and_weighs_future_events_one() -> None:
    ages = np.array([-3.0, 0.0, 7.0, 14.0, 21.0])
    np.testing.assert_allclose(exponential(ages, 7.0), [1.0, 1.0, 0.5, 0.25, 0.125], rtol=1e-15)
    assert exponential(1.0, math.log(2)) == pytest.approx(math.exp(-1.0), rel=1e-15)  # exp(-k t), k = ln2/h


def test_exponential_takes_a_half_life_per_event_and_inf_means_no_decay() -> None:
    ages = np.array([7.0, 7.0, 7.0])
    np.testing.assert_allclose(exponential(ages, np.array([7.0, 14.0, np.inf])), [0.5, 2**-0.5, 1.0], rtol=1e-15)


@pytest.mark.parametrize("bad", [0.0, -1.0, np.nan, np.array([1.0, 0.0])])
def test_exponential_rejects_non_positive_half_lives(bad) -> None:
    with pytest.raises(ValueError, match="positive"):
        exponential(np.array([1.0, 2.0]), bad)


def test_linear_loses_k_per_day_and_stops_at_zero() -> None:
    ages = np.array([-1.0, 0.0, 2.5, 5.0, 10.0, 20.0])
    np.testing.assert_allclose(linear(ages, 0.1), [1.0, 1.0, 0.75, 0.5, 0.0, 0.0], atol=1e-15)
    np.testing.assert_array_equal(linear(ages, 0.0), np.ones(6))
    with pytest.raises(ValueError, match=">= 0"):
        linear(ages, -0.1)


def test_time_windows_weigh_each_bucket_normalised() -> None:
    # Buckets [0, 7), [7, 30), [30, 90) weigh 3 : 2 : 1, i.e. 1/2, 1/3, 1/6; 90 days and older: 0.
    ages = np.array([-1.0, 0.0, 6.9, 7.0, 29.0, 30.0, 89.9, 90.0, 1000.0])
    expected = [1 / 2, 1 / 2, 1 / 2, 1 / 3, 1 / 3, 1 / 6, 1 / 6, 0.0, 0.0]
    np.testing.assert_allclose(time_windows(ages, [7, 30, 90], [3, 2, 1]), expected, rtol=1e-15)


def test_time_windows_sum_is_the_textbook_weighted_mean_of_bucket_totals() -> None:
    rng = np.random.default_rng(0)
    ages, values = rng.uniform(0, 100, 200), rng.uniform(0, 5, 200)
    bounds, weights = [10.0, 40.0, 100.0], [5.0, 2.0, 1.0]
    totals = [values[(ages >= lo) & (ages < hi)].sum() for lo, hi in zip([0.0, 10.0, 40.0], bounds)]
    textbook = np.dot(weights, totals) / np.sum(weights)
    assert (values * time_windows(ages, bounds, weights)).sum() == pytest.approx(textbook, rel=1e-12)


@pytest.mark.parametrize(
    ("bounds", "weights"),
    [([], []), ([7, 30], [1.0]), ([30, 7], [1, 1]), ([0, 7], [1, 1]), ([7, 30], [-1, 2]), ([7, 30], [0, 0])],
)
def test_time_windows_reject_malformed_buckets(bounds, weights) -> None:
    with pytest.raises(ValueError):
        time_windows(np.array([1.0]), bounds, weights)


def test_decay_weights_dispatches_by_kind() -> None:
    ages = np.array([0.0, 3.0, 10.0, 40.0])
    np.testing.assert_array_equal(decay_weights("exponential", ages, half_life_days=3.0), exponential(ages, 3.0))
    np.testing.assert_array_equal(decay_weights("linear", ages, rate_per_day=0.05), linear(ages, 0.05))
    np.testing.assert_array_equal(
        decay_weights("window", ages, bounds_days=[7, 30], weights=[2, 1]), time_windows(ages, [7, 30], [2, 1])
    )
    np.testing.assert_array_equal(decay_weights("none", ages), np.ones(4))
    with pytest.raises(ValueError, match="unknown decay kind"):
        decay_weights("hyperbolic", ages)
    with pytest.raises(TypeError):
        decay_weights("exponential", ages, rate_per_day=0.1)


def test_event_weights_by_type_and_value_mode() -> None:
    types = np.array(["click", "purchase", "rating", "click"])
    values = np.array([1.0, 1.0, 4.0, 2.0])
    weights = {"click": 0.5, "purchase": 3.0, "rating": 1.0}
    np.testing.assert_array_equal(event_weights(types, values, weights, "one"), [0.5, 3.0, 1.0, 0.5])
    np.testing.assert_array_equal(event_weights(types, values, weights, "value"), [0.5, 3.0, 4.0, 1.0])
    np.testing.assert_array_equal(
        event_weights(types, values, weights, "centered", center=3.0), [-1.0, -6.0, 1.0, -0.5]
    )
    # Centre defaults to the mean value (2.0).
    np.testing.assert_array_equal(event_weights(types, values, weights, "centered"), [-0.5, -3.0, 2.0, 0.0])


def test_event_weights_unknown_type_fails_unless_a_default_is_given() -> None:
    types, values = np.array(["rating", "view"]), np.array([5.0, 1.0])
    with pytest.raises(ValueError, match="view"):
        event_weights(types, values, {"rating": 1.0})
    np.testing.assert_array_equal(event_weights(types, values, {"rating": 1.0}, default=0.25), [1.0, 0.25])
    with pytest.raises(ValueError, match="value_mode"):
        event_weights(types, values, {"rating": 1.0, "view": 1.0}, "log")


# ---------------------------------------------------------------- batch and incremental


def test_decayed_sums_by_hand() -> None:
    # Key 7: weight 2 now and weight 1 one half-life ago -> 2.5; key 3: weight 4 two
    # half-lives ago -> 1; an event after the query time weighs its full weight.
    keys = np.array([7, 3, 7, 3])
    seconds = T0 + DAY * np.array([14.0, 0.0, 7.0, 20.0])
    unique, scores = decayed_sums(keys, seconds, np.array([2.0, 4.0, 1.0, 0.5]), T0 + 14 * DAY, 7.0)
    np.testing.assert_array_equal(unique, [3, 7])
    np.testing.assert_allclose(scores, [1.0 + 0.5, 2.5], rtol=1e-15)


def test_decayed_sums_relative_to_each_keys_latest_event() -> None:
    keys = np.array(["a", "b", "a"])
    seconds = T0 + DAY * np.array([0.0, 3.0, 7.0])
    unique, scores = decayed_sums(keys, seconds, None, None, 7.0)
    np.testing.assert_array_equal(unique, ["a", "b"])
    np.testing.assert_allclose(scores, [1.5, 1.0], rtol=1e-15)


def test_decayed_sums_take_a_half_life_per_event() -> None:
    # The same key's events with their user's half-life: 7 d for key 0, 14 d for key 1.
    keys = np.array([0, 1])
    seconds = np.full(2, T0)
    _, scores = decayed_sums(keys, seconds, None, T0 + 14 * DAY, np.array([7.0, 14.0]))
    np.testing.assert_allclose(scores, [0.25, 0.5], rtol=1e-15)


# ---------------------------------------------------------------- decayed interest on drift data


def _category_events(data: SyntheticData) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Events exploded to one row per category of their item: user, category code,
    epoch seconds, item index."""
    names = sorted({c for row in data.items["categories"] for c in row})
    per_item = dict(zip(data.items["item_id"].astype("int64"), data.items["categories"]))
    item_ids = data.events["item_id"].to_numpy()
    counts = np.array([len(per_item[i]) for i in item_ids])
    codes = np.array([names.index(c) for i in item_ids for c in per_item[i]])
    seconds = data.events["timestamp"].astype("int64").to_numpy() / 1e6
    users = data.events["user_id"].to_numpy()
    return np.repeat(users, counts), codes, np.repeat(seconds, counts), np.repeat(item_ids, counts), names


def _top_categories(data: SyntheticData, half_life_days: float) -> pd.Series:
    users, codes, seconds, _, names = _category_events(data)
    n = len(names)
    keys, scores = decayed_sums(users * n + codes, seconds, None, seconds.max(), half_life_days)
    table = np.zeros((users.max() + 1, n))
    table[keys // n, keys % n] = scores
    top = table[1:].argmax(axis=1)
    return pd.Series([names[c] for c in top], index=np.arange(1, users.max() + 1))


def test_decayed_category_interest_names_the_new_category_and_a_count_the_old() -> None:
    data = make_drift_dataset()
    truth = data.truth.set_index("user_id")
    decayed = _top_categories(data, data.config.span_days / 10)
    counted = _top_categories(data, np.inf)  # no decay: a plain count
    assert (decayed == truth["to_category"]).mean() > 0.9
    assert (counted == truth["to_category"]).mean() < 0.2
    assert (counted == truth["from_category"]).mean() > 0.8


# ---------------------------------------------------------------- learned decay


def _planted(seed: int = 0, per_group: int = 30, n_cat: int = 8, per_cat: int = 10) -> tuple[np.ndarray, ...]:
    """Two groups of 30 users, 400 events over 100 days each. Fast users (0-29) hold one
    interest at a time and switch every 10 days; slow users (30-59) keep two interests
    throughout, interleaved. 80% of events are on interest, the rest uniform noise."""
    rng = np.random.default_rng(seed)
    events, days = 400, 100.0
    users, items, seconds = [], [], []
    for user in range(2 * per_group):
        t = np.sort(rng.uniform(0, days, events))
        if user < per_group:
            segment = np.floor((t + rng.uniform(0, 10.0)) / 10.0).astype(int)
            category = (rng.integers(0, n_cat) + np.cumsum(rng.integers(1, n_cat, segment.max() + 1)))[segment] % n_cat
        else:
            category = rng.choice(n_cat, 2, replace=False)[rng.integers(0, 2, events)]
        on_interest = rng.random(events) < 0.8
        item = np.where(
            on_interest, category * per_cat + rng.integers(0, per_cat, events), rng.integers(0, n_cat * per_cat, events)
        )
        users.append(np.full(events, user))
        items.append(item)
        seconds.append(T0 + t * DAY)
    membership = sp.csr_matrix(
        (np.ones(n_cat * per_cat), (np.arange(n_cat * per_cat), np.arange(n_cat * per_cat) // per_cat))
    )
    return np.concatenate(users), np.concatenate(items), np.concatenate(seconds), membership


def test_learned_half_lives_are_shorter_for_users_whose_interest_moves_fast() -> None:
    users, items, seconds, membership = _planted()
    config = LearnedDecay(holdout=0.05, holdout_by="user")
    fit = fit_user_half_lives(users, items, seconds, category_transition(membership), config=config)
    fast, slow = fit.half_life_days[:30], fit.half_life_days[30:]
    assert np.median(fast) * 2 < np.median(slow)
    # Probability that a random fast user's half-life is below a random slow user's.
    assert np.mean(fast[:, None] < slow[None, :]) > 0.65
    assert (fit.targets == 20).all()


def test_learned_decay_on_drift_data_beats_no_decay() -> None:
    data = make_drift_dataset()
    names = sorted({c for row in data.items["categories"] for c in row})
    items = data.items
    rows = np.repeat(np.arange(len(items)), [len(c) for c in items["categories"]])
    cols = [names.index(c) for row in items["categories"] for c in row]
    member = sp.csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(len(items), len(names)))
    seconds = data.events["timestamp"].astype("int64").to_numpy() / 1e6
    fit = fit_user_half_lives(
        data.events["user_id"].to_numpy(),
        data.events["item_id"].to_numpy() - 1,
        seconds,
        category_transition(member),
        config=LearnedDecay(holdout=0.1),
    )
    # Interest moved late in the year: the pooled optimum is weeks, not "no decay".
    assert 2.0 < fit.global_half_life_days < data.config.span_days / 4
    assert fit.log_likelihood.max() > fit.log_likelihood[-1] + 100


def test_the_prior_pulls_users_with_little_evidence_to_the_global_half_life() -> None:
    users, items, seconds, membership = _planted()
    transition = category_transition(membership)
    loose = fit_user_half_lives(users, items, seconds, transition, config=LearnedDecay(holdout=0.05, holdout_by="user", prior_strength=0.0))
    tight = fit_user_half_lives(users, items, seconds, transition, config=LearnedDecay(holdout=0.05, holdout_by="user", prior_strength=5.0))
    pooled = fit_user_half_lives(users, items, seconds, transition, config=LearnedDecay(holdout=0.05, holdout_by="user", prior_strength=np.inf))
    distance = lambda fit: np.abs(np.log2(fit.half_life_days / fit.global_half_life_days))  # noqa: E731
    assert distance(tight).mean() < distance(loose).mean() / 2
    np.testing.assert_allclose(pooled.half_life_days, pooled.global_half_life_days)
    assert loose.global_half_life_days == pytest.approx(tight.global_half_life_days)


def test_users_without_history_or_targets_get_the_global_half_life() -> None:
    users, items, seconds, membership = _planted()
    # User 100 has a single event, in the held-out period: no history to learn from.
    users = np.r_[users, 100]
    items, seconds = np.r_[items, 0], np.r_[seconds, seconds.max() + DAY]
    fit = fit_user_half_lives(users, items, seconds, category_transition(membership), config=LearnedDecay(holdout=0.05))
    assert fit.targets[fit.keys == 100].tolist() == [0]
    assert fit.half_life_days[fit.keys == 100] == pytest.approx(fit.global_half_life_days)
    assert fit.of(np.array([100, 12345])).tolist() == pytest.approx([fit.global_half_life_days] * 2)


def test_dense_and_sparse_transitions_fit_the_same() -> None:
    users, items, seconds, membership = _planted(seed=1)
    transition = category_transition(membership)
    config = LearnedDecay(holdout=0.05, holdout_by="user")
    sparse = fit_user_half_lives(users, items, seconds, transition, config=config)
    dense = fit_user_half_lives(users, items, seconds, transition.toarray(), config=config)
    np.testing.assert_allclose(sparse.half_life_days, dense.half_life_days, rtol=1e-9)


def test_holdout_mask_by_time_and_by_user() -> None:
    users = np.array([1, 1, 1, 1, 2, 2, 3])
    seconds = np.array([5.0, 1.0, 3.0, 2.0, 9.0, 8.0, 0.0])
    # Globally latest 2 of 7 (round(7 * 0.7) = 5 stay): times 8 and 9.
    assert holdout_mask(users, seconds, 0.3, "time").tolist() == [False, False, False, False, True, True, False]
    # Per user: floor(n * 0.5) latest: user 1's times 5 and 3, user 2's 9, none of user 3's.
    assert holdout_mask(users, seconds, 0.5, "user").tolist() == [True, False, True, False, True, False, False]
    with pytest.raises(ValueError):
        holdout_mask(users, seconds, 1.0)


def test_category_transition_spreads_interest_over_shared_categories() -> None:
    # Items 0, 1 in category A; item 2 in A and B; item 3 in B.
    member = np.array([[1, 0], [1, 0], [1, 1], [0, 1]])
    transition = category_transition(member).toarray()
    np.testing.assert_allclose(transition[0], [1 / 3, 1 / 3, 1 / 3, 0.0])
    np.testing.assert_allclose(transition[2], [1 / 6, 1 / 6, 1 / 6 + 1 / 4, 1 / 4])
    np.testing.assert_allclose(transition.sum(axis=1), 1.0)


def test_users_whose_likelihood_ignores_the_half_life_get_the_global_one() -> None:
    users, items, seconds, membership = _planted()
    # User 100: history all at one instant (decay cannot change the profile), then targets.
    extra = 30
    users = np.r_[users, np.full(extra, 100)]
    items = np.r_[items, np.arange(extra) % 80]
    seconds = np.r_[seconds, np.full(extra - 1, T0), seconds.max() + DAY]
    config = LearnedDecay(holdout=0.05, holdout_by="user", prior_strength=0.0)
    fit = fit_user_half_lives(users, items, seconds, category_transition(membership), config=config)
    assert fit.targets[fit.keys == 100].tolist() == [1]
    assert fit.half_life_days[fit.keys == 100] == pytest.approx(fit.global_half_life_days)


def test_with_no_evidence_at_all_the_global_half_life_is_the_grids_middle() -> None:
    # Every event at one instant: no half-life predicts better than another.
    users, items = np.array([1, 1, 2, 2]), np.array([0, 1, 1, 0])
    fit = fit_user_half_lives(users, items, np.full(4, T0), np.ones((2, 2)), config=LearnedDecay(grid_days=(1.0, 4.0, 16.0)))
    assert fit.global_half_life_days == pytest.approx(4.0)
    np.testing.assert_allclose(fit.half_life_days, 4.0)


def test_fit_rejects_bad_inputs() -> None:
    users, items, seconds = np.array([1, 1]), np.array([0, 1]), np.array([T0, T0 + DAY])
    with pytest.raises(ValueError, match="non-negative"):
        fit_user_half_lives(users, items, seconds, np.ones((2, 2)), weights=np.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="index"):
        fit_user_half_lives(users, np.array([0, 2]), seconds, np.ones((2, 2)))
    with pytest.raises(ValueError, match="non-negative"):
        fit_user_half_lives(users, items, seconds, -np.ones((2, 2)))
    with pytest.raises(ValueError, match="increasing"):
        fit_user_half_lives(users, items, seconds, np.ones((2, 2)), config=LearnedDecay(grid_days=(4.0, 1.0)))
