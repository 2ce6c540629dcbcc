"""The synthetic drift data: reproducible, canonical, and planted as promised.

The last tests are the reason the data exists: raw category counts must still name each
user's old interest while exponentially decayed counts name the new one.
"""
from __future__ import annotations

import dataclasses
import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.contract import EVENT_COLUMNS, ITEM_COLUMNS, TIMESTAMP_DTYPE
from features.synthetic import SyntheticConfig, SyntheticData, make_drift_dataset

DEFAULT = SyntheticConfig()
HALF_LIFE_DAYS = DEFAULT.span_days / 10


@pytest.fixture(scope="module")
def data() -> SyntheticData:
    """The default data set, generated once for the module."""
    return make_drift_dataset(DEFAULT)


def _event_categories(data: SyntheticData) -> pd.DataFrame:
    """Events (numbered in column 'event') with one row per category of their item."""
    categories = data.items[["item_id", "categories"]].explode("categories")
    categories["item_id"] = categories["item_id"].astype("int64")
    events = data.events.rename_axis("event").reset_index()
    return events.merge(categories.rename(columns={"categories": "category"}), on="item_id")


def _top_category(data: SyntheticData, half_life_days: float | None) -> pd.Series:
    """Each user's highest-weighted category; undecayed when half_life_days is None."""
    rows = _event_categories(data)
    if half_life_days is None:
        weight = np.ones(len(rows))
    else:
        reference = data.events["timestamp"].max()
        age_days = (reference - rows["timestamp"]).to_numpy() / np.timedelta64(1, "D")
        weight = np.exp2(-age_days / half_life_days)
    profile = rows.assign(weight=weight).groupby(["user_id", "category"])["weight"].sum().unstack(fill_value=0.0)
    return profile.idxmax(axis=1)


def _share_matching(top: pd.Series, truth: pd.DataFrame, column: str) -> float:
    """Share of users whose top category equals the truth column."""
    expected = truth.set_index("user_id")[column]
    return float((top.reindex(expected.index) == expected).mean())


def _assert_data_equal(left: SyntheticData, right: SyntheticData) -> None:
    """All three tables identical."""
    pd.testing.assert_frame_equal(left.events, right.events)
    pd.testing.assert_frame_equal(left.items, right.items)
    pd.testing.assert_frame_equal(left.truth, right.truth)


def _assert_contract(data: SyntheticData) -> None:
    """Events, items and truth follow the canonical contract and each other."""
    config = data.config
    events, items, truth = data.events, data.items, data.truth
    assert list(events.columns) == EVENT_COLUMNS
    assert events.dtypes.astype(str).tolist() == ["int64", "int64", "object", "float64", TIMESTAMP_DTYPE]
    assert not events.isna().any().any()
    assert (events["event_type"] == "rating").all()
    assert events["value"].between(0.5, 5.0).all()
    # Half-star steps, as MovieLens ratings come.
    assert ((events["value"] * 2) % 1 == 0).all()
    assert events["timestamp"].is_monotonic_increasing
    start = pd.Timestamp(config.start, tz="UTC")
    assert events["timestamp"].min() >= start
    assert events["timestamp"].max() < start + pd.Timedelta(days=config.span_days)
    assert (events.groupby("user_id").size() == config.events_per_user).all()
    assert set(events["user_id"]) == set(range(1, config.n_users + 1))

    assert list(items.columns) == ITEM_COLUMNS
    assert items["item_id"].is_unique and len(items) == config.n_items
    assert not items[["item_id", "title", "year", "text"]].isna().any().any()
    assert set(events["item_id"]) <= set(items["item_id"].astype("int64"))
    names = {f"cat{k}" for k in range(config.n_categories)}
    columns = items[["item_id", "title", "year", "categories"]]
    for item_id, title, year, categories in columns.itertuples(index=False):
        assert re.fullmatch(rf"Item {item_id} \({year}\)", title)
        assert 1 <= len(categories) <= 2 and len(set(categories)) == len(categories)
        assert set(categories) <= names
    # Every category must be sampleable, or a user could be given an empty interest.
    assert set(items["categories"].explode()) == names

    assert list(truth.columns) == ["user_id", "from_category", "to_category", "drift_time"]
    assert str(truth["drift_time"].dtype) == TIMESTAMP_DTYPE
    assert not truth.isna().any().any()


def test_same_seed_gives_same_data(data: SyntheticData) -> None:
    _assert_data_equal(data, make_drift_dataset(SyntheticConfig()))


def test_different_seeds_give_different_data(data: SyntheticData) -> None:
    other = make_drift_dataset(dataclasses.replace(DEFAULT, seed=DEFAULT.seed + 1))
    assert not data.events.equals(other.events)
    assert not data.truth.equals(other.truth)
    assert not data.items.equals(other.items)


def test_default_config_when_none(data: SyntheticData) -> None:
    _assert_data_equal(data, make_drift_dataset())


def test_default_tables_follow_contract(data: SyntheticData) -> None:
    _assert_contract(data)


@settings(max_examples=25, deadline=None)
@given(
    n_categories=st.integers(2, 8),
    extra_items=st.integers(0, 30),
    n_users=st.integers(1, 15),
    events_per_user=st.integers(2, 20),
    late_share=st.floats(0.01, 0.99),
    signal=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_any_valid_config_follows_contract(
    n_categories: int,
    extra_items: int,
    n_users: int,
    events_per_user: int,
    late_share: float,
    signal: float,
    seed: int,
) -> None:
    config = SyntheticConfig(
        n_users=n_users,
        n_items=n_categories + extra_items,
        n_categories=n_categories,
        events_per_user=events_per_user,
        late_share=late_share,
        signal=signal,
        seed=seed,
    )
    data = make_drift_dataset(config)
    _assert_contract(data)
    _assert_each_user_drifts(data)


def _assert_each_user_drifts(data: SyntheticData) -> None:
    """One truth row per user, distinct categories, events on both sides of the drift."""
    truth, events = data.truth, data.events
    assert sorted(truth["user_id"]) == sorted(events["user_id"].unique())
    assert (truth["from_category"] != truth["to_category"]).all()
    drift = events["user_id"].map(truth.set_index("user_id")["drift_time"])
    after = events["timestamp"] >= drift
    per_user = after.groupby(events["user_id"]).agg(["any", "all"])
    assert per_user["any"].all() and not per_user["all"].any()


def test_every_user_drifts(data: SyntheticData) -> None:
    _assert_each_user_drifts(data)
    start = pd.Timestamp(DEFAULT.start, tz="UTC")
    lo, hi = (start + pd.Timedelta(days=f * DEFAULT.span_days) for f in DEFAULT.drift_window)
    assert data.truth["drift_time"].between(lo, hi).all()


def test_events_follow_the_planted_interest(data: SyntheticData) -> None:
    rows = _event_categories(data).merge(data.truth, on="user_id")
    after = rows["timestamp"] >= rows["drift_time"]
    interest = rows["to_category"].where(after, rows["from_category"])
    # Per event: does its item carry the interest of its side of the drift?
    on_interest = (rows["category"] == interest).groupby([rows["event"], after]).any()
    share = on_interest.groupby(level=1).mean()
    assert share[False] > DEFAULT.signal and share[True] > DEFAULT.signal


def test_late_period_is_shorter_and_smaller(data: SyntheticData) -> None:
    end = data.events["timestamp"].max()
    start = data.events["timestamp"].min()
    assert ((end - data.truth["drift_time"]) < (data.truth["drift_time"] - start)).all()
    drift = data.events["user_id"].map(data.truth.set_index("user_id")["drift_time"])
    late_share = (data.events["timestamp"] >= drift).groupby(data.events["user_id"]).mean()
    assert (late_share < 0.5).all()


def test_raw_counts_favour_old_category(data: SyntheticData) -> None:
    assert _share_matching(_top_category(data, None), data.truth, "from_category") > 0.8


def test_decayed_counts_favour_new_category(data: SyntheticData) -> None:
    assert _share_matching(_top_category(data, HALF_LIFE_DAYS), data.truth, "to_category") > 0.8


def test_raw_counts_follow_late_interest_when_late_period_dominates() -> None:
    """The raw-count check discriminates: flip the volumes and raw counts flip too."""
    data = make_drift_dataset(dataclasses.replace(DEFAULT, late_share=0.7))
    assert _share_matching(_top_category(data, None), data.truth, "from_category") < 0.2


@pytest.mark.parametrize(
    "changes",
    [
        {"n_categories": 1},
        {"n_items": 5, "n_categories": 6},
        {"events_per_user": 1},
        {"n_users": 0},
        {"span_days": 0.0},
        {"signal": 1.5},
        {"late_share": 0.0},
        {"late_share": 1.0},
        {"drift_window": (0.9, 0.5)},
        {"drift_window": (0.0, 0.5)},
        {"two_category_share": -0.1},
    ],
)
def test_invalid_config_is_rejected(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="invalid SyntheticConfig"):
        SyntheticConfig(**changes)
