"""LM profiles as decay-weighted means of item vectors, checked against a direct recompute."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.decay import SECONDS_PER_DAY
from features.interest import weights
from flows.config import FeaturesConfig
from features.lm_profile import lm_profile_table, unit_profiles, vector_rows
from features.synthetic import SyntheticConfig, make_drift_dataset

PARAMS = FeaturesConfig(user_half_life_days=10.0)


def seconds(stamps: pd.Series) -> np.ndarray:
    return stamps.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[us]").astype("int64") / 1e6


def random_vectors(item_ids: np.ndarray, dim: int = 8, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(len(item_ids), dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def direct_mean(events: pd.DataFrame, item_ids, vectors, user: int, at_s: float, params=PARAMS):
    """sum w d v / sum w d over the user's events up to at_s that have a vector."""
    mine = events[(events["user_id"] == user).to_numpy() & (seconds(events["timestamp"]) <= at_s)]
    rows = vector_rows(mine["item_id"].to_numpy(), item_ids)
    keep = rows >= 0
    d = np.exp2(-(at_s - seconds(mine["timestamp"])[keep]) / (params.user_half_life_days * SECONDS_PER_DAY))
    w = weights(params, mine["event_type"].to_numpy()[keep], mine["value"].to_numpy()[keep]) * d
    return (vectors[rows[keep]] * w[:, None]).sum(axis=0) / w.sum(), w.sum()


@pytest.fixture(scope="module")
def drift():
    return make_drift_dataset(SyntheticConfig(n_users=12, n_items=40, events_per_user=25, seed=3))


def test_every_row_is_the_decayed_mean_as_of_its_timestamp(drift):
    item_ids = np.sort(drift.items["item_id"].to_numpy())
    vectors = random_vectors(item_ids)
    table = lm_profile_table(drift.events, item_ids, vectors, PARAMS)
    assert table.groupby("user_id")["event_timestamp"].is_monotonic_increasing.all()
    for row in table.sample(25, random_state=0).itertuples():
        mean, weight = direct_mean(drift.events, item_ids, vectors, row.user_id, row.event_timestamp.timestamp())
        np.testing.assert_allclose(row.lm_profile, mean, rtol=1e-5, atol=1e-6)
        assert row.lm_weight == pytest.approx(weight, rel=1e-5)
    # One row per user and UTC day with events.
    days = drift.events.assign(day=drift.events["timestamp"].dt.floor("D"))
    assert len(table) == len(days[["user_id", "day"]].drop_duplicates())


def test_items_without_a_vector_add_no_weight(drift):
    item_ids = np.sort(drift.items["item_id"].to_numpy())
    some = item_ids[::2]  # half the catalogue has no text vector
    vectors = random_vectors(some)
    table = lm_profile_table(drift.events, some, vectors, PARAMS)
    last = table.groupby("user_id").tail(1)
    for row in last.itertuples():
        mean, weight = direct_mean(drift.events, some, vectors, row.user_id, row.event_timestamp.timestamp())
        np.testing.assert_allclose(row.lm_profile, mean, rtol=1e-5, atol=1e-6)
        assert row.lm_weight == pytest.approx(weight, rel=1e-5)


def test_unit_profiles_normalise_and_leave_missing_users_zero():
    rows = pd.DataFrame({"lm_profile": [[3.0, 4.0], None, [0.0, 0.0]]})
    np.testing.assert_allclose(unit_profiles(rows, 2), [[0.6, 0.8], [0, 0], [0, 0]])


@pytest.mark.parametrize("chunk_events", [1, 30, 100, 10_000])
def test_profiles_in_slices_of_users_are_the_whole_table_and_one_file(drift, chunk_events, tmp_path):
    """The profiles step writes the table a slice of whole users at a time: the same rows,
    one Parquet file whatever the slicing."""
    from features.lm_profile import lm_profile_chunks
    from features.store import write_chunks

    item_ids = np.sort(drift.items["item_id"].to_numpy())
    vectors = random_vectors(item_ids)
    whole = lm_profile_table(drift.events, item_ids, vectors, PARAMS)
    parts = list(lm_profile_chunks(drift.events, item_ids, vectors, PARAMS, chunk_events))
    assert (len(parts) == 1) if chunk_events >= len(drift.events) else (len(parts) > 1)
    assert sum(p["user_id"].nunique() for p in parts) == whole["user_id"].nunique()  # each user in one slice
    rows = write_chunks(iter(parts), tmp_path / "user_lm_profile.parquet")
    back = pd.read_parquet(tmp_path / "user_lm_profile.parquet")
    assert rows == len(whole) == len(back)
    for frame in (pd.concat(parts, ignore_index=True), back):
        pd.testing.assert_frame_equal(frame.drop(columns="lm_profile"), whole.drop(columns="lm_profile"))
        np.testing.assert_array_equal(np.stack(frame["lm_profile"]), np.stack(whole["lm_profile"]))
