"""Feast on real SQLite and on real Redis + PostgreSQL: batch, online, point-in-time, live."""
from __future__ import annotations

import warnings
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from features.feature_repo.definitions import repository
from features.decay import SECONDS_PER_DAY
from features.interest import categories_of, category_weights, latest_rows, read_users
from features.live import update_items, update_lm_profiles, update_users
from features.lm_profile import lm_profile_table
from features.store import (
    DECAY_VIEWS,
    ITEM_FEATURES,
    LM_FEATURES,
    LM_VIEWS,
    USER_FEATURES,
    apply,
    build,
    historical,
    made_with,
    materialize,
    online_items,
    online_lm_profiles,
    online_users,
    open_store,
    stored_made_with,
    within_ttl,
    write_tables,
)
from features.synthetic import SyntheticConfig, make_drift_dataset
from flows.config import FeaturesConfig

PARAMS = FeaturesConfig()


@pytest.fixture(scope="module")
def drift():
    return make_drift_dataset(SyntheticConfig(n_users=40, n_items=60, events_per_user=30, seed=5))


def seconds(stamps: pd.Series) -> np.ndarray:
    return stamps.dt.tz_localize(None).to_numpy("datetime64[us]").astype("int64") / 1e6


def batch_interest(events: pd.DataFrame, items: pd.DataFrame, at_s: float) -> dict[int, np.ndarray]:
    """Independent recompute: sum over each user's events up to at_s of weight x 2^(-age/h)."""
    past = events[seconds(events["timestamp"]) <= at_s]
    times = seconds(past["timestamp"])
    vectors = category_weights(items, past["item_id"].to_numpy(), categories_of(items))
    weights = np.exp2(-(at_s - times) / (PARAMS.user_half_life_days * SECONDS_PER_DAY))
    out = {}
    for user in np.unique(past["user_id"]):
        mask = past["user_id"].to_numpy() == user
        out[int(user)] = (vectors[mask] * weights[mask, None]).sum(axis=0)
    return out


def stored(cfg: FeaturesConfig, events, items):
    tables = build(events, items, cfg)
    write_tables(tables, cfg.out_dir)
    store = open_store(cfg.store)
    apply(store, repository(cfg.out_dir, cfg.profiles_dir))
    end = events["timestamp"].max().to_pydatetime() + timedelta(seconds=1)
    materialize(store, events["timestamp"].min().to_pydatetime(), end)
    return store, tables


def as_of(user_rows: pd.DataFrame, at_s: float) -> dict[int, np.ndarray]:
    values = read_users(user_rows, at_s, PARAMS)
    return {int(u): np.asarray(v) for u, v in zip(values["user_id"], values["interest"])}


def test_online_values_equal_a_batch_recompute(store_cfg, drift):
    store, tables = stored(store_cfg, drift.events, drift.items)
    at = drift.events["timestamp"].max().timestamp() + 3 * SECONDS_PER_DAY
    users = sorted(drift.events["user_id"].unique())
    online = as_of(online_users(store, users), at)
    expected = batch_interest(drift.events, drift.items, at)
    assert set(online) == set(expected) == set(int(u) for u in users)
    for user in users:
        np.testing.assert_allclose(online[user], expected[user], rtol=1e-5, atol=1e-7)
    items = online_items(store, [1, 2, 999_999])
    assert items["popularity_long"].isna().tolist() == [False, False, True]


def test_a_new_half_life_leaves_no_online_row_made_with_the_old_one(store_cfg, drift):
    """Features made at a 30-day half-life, then again at 14 days over the same span without
    one user: the incremental load would have nothing new to load, so the views are rebuilt;
    the user left out has no row, every other row is the 14-day one."""
    events, items = drift.events, drift.items
    start, end = events["timestamp"].min().to_pydatetime(), events["timestamp"].max().to_pydatetime() + timedelta(seconds=1)
    store = open_store(store_cfg.store)
    write_tables(build(events, items, store_cfg), store_cfg.out_dir)
    assert apply(store, repository(store_cfg.out_dir, store_cfg.profiles_dir, made_with(store_cfg))) == []
    materialize(store, start, end)
    gone = int(events["user_id"].iloc[0])
    assert not online_users(store, [gone])["events_decayed"].isna().any()

    shorter = store_cfg.model_copy(update={"user_half_life_days": 14.0})
    kept = events[events["user_id"] != gone]
    tables = build(kept, items, shorter)
    write_tables(tables, shorter.out_dir)
    store = open_store(shorter.store)
    dropped = apply(store, repository(shorter.out_dir, shorter.profiles_dir, made_with(shorter)))
    assert set(dropped) == {"user_interest", "item_popularity", "user_lm_profile"}
    materialize(store, start, end)
    assert stored_made_with(store) == made_with(shorter) and '"user_half_life_days": 14.0' in made_with(shorter)
    assert online_users(store, [gone])["events_decayed"].isna().all()
    users = sorted(int(u) for u in kept["user_id"].unique())
    online = online_users(store, users).set_index("user_id")["events_decayed"]
    latest = latest_rows(tables["user_interest"], "user_id", float("inf")).set_index("user_id")["events_decayed"]
    np.testing.assert_allclose(online.loc[users].to_numpy(float), latest.loc[users].to_numpy(float), rtol=1e-6)


def test_historical_rows_are_point_in_time_and_never_dropped(store_cfg, drift):
    events = drift.events
    user = int(events["user_id"].iloc[0])
    times = np.sort(seconds(events.loc[events["user_id"] == user, "timestamp"]))
    # Planted: halfway between the user's 10th and 11th events, the 11th must not be visible.
    middle = (times[9] + times[10]) / 2
    store, tables = stored(store_cfg, events, drift.items)
    entity_rows = pd.DataFrame(
        {
            "user_id": [user, user, user, 424242],
            "event_timestamp": pd.to_datetime(
                [middle, times[0] - SECONDS_PER_DAY, times[-1] + 400 * SECONDS_PER_DAY, middle], unit="s", utc=True
            ),
        }
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # what Feast's own import leaves: every warning shown
        rows = historical(store, entity_rows, USER_FEATURES)
    assert not [w for w in caught if issubclass(w.category, DeprecationWarning)]  # nothing for a step's output
    assert len(rows) == 4 and rows["user_id"].tolist() == entity_rows["user_id"].tolist()
    assert rows["last_event_s"].iloc[0] == int(times[9])  # state after the 10th event, no leakage
    np.testing.assert_allclose(
        as_of(rows.iloc[[0]], middle)[user], batch_interest(events, drift.items, middle)[user], rtol=1e-5
    )
    # Before the first event, past the TTL, and an unknown user: kept, with no features.
    assert rows["last_event_s"].iloc[1:].isna().all()


def test_online_readers_apply_the_ttl_that_point_in_time_reads_apply(store_cfg, drift):
    from features.feature_repo.definitions import TTL

    store, tables = stored(store_cfg, drift.events, drift.items)
    state = tables["item_popularity"].sort_values("event_timestamp").groupby("item_id").tail(1).iloc[0]
    last, ttl = float(state["last_event_s"]), TTL.total_seconds()
    at = np.array([last, last + ttl - 1, last + ttl, last + ttl + 1])
    rows = historical(store, pd.DataFrame({"item_id": [int(state["item_id"])] * len(at),
                                           "event_timestamp": pd.to_datetime(at, unit="s", utc=True)}), ITEM_FEATURES)
    found = rows["last_event_s"].notna().to_numpy()
    assert found[0] and not found[-1]  # the boundary is inside what is checked
    assert [bool(within_ttl(np.array([last]), t)[0]) for t in at] == found.tolist()
    assert not within_ttl(np.array([np.nan]), last).any()


def test_live_events_update_online_state_like_a_batch_recompute(store_cfg, drift):
    events = drift.events.sort_values("timestamp", kind="stable").reset_index(drop=True)
    cut = int(len(events) * 0.8)
    store, _ = stored(store_cfg, events.iloc[:cut], drift.items)
    new = events.iloc[cut:].copy()
    late = events.iloc[cut - 5 : cut - 4].assign(item_id=int(events["item_id"].iloc[0]))
    late["timestamp"] = late["timestamp"] - pd.Timedelta(days=2)  # older than the stored state
    arriving = pd.concat([new, late], ignore_index=True)
    update_users(store, arriving, drift.items, PARAMS)
    update_items(store, arriving, PARAMS)

    every = pd.concat([events, late], ignore_index=True)
    at = every["timestamp"].max().timestamp() + SECONDS_PER_DAY
    users = sorted(every["user_id"].unique())
    online = online_users(store, users)
    expected = batch_interest(every, drift.items, at)
    got = as_of(online, at)
    for user in users:
        np.testing.assert_allclose(got[user], expected[user], rtol=1e-5, atol=1e-7)
    window = read_users(online, at, PARAMS)
    user_times = every.groupby("user_id")["timestamp"].apply(seconds)
    for user, count in zip(window["user_id"], window["events_30d"]):
        times = user_times[user]
        assert count == np.count_nonzero((times > at - 30 * SECONDS_PER_DAY) & (times <= at))


def test_decayed_interest_finds_the_new_category_where_counts_keep_the_old(drift):
    tables = build(drift.events, drift.items, FeaturesConfig(user_half_life_days=30))
    at = drift.events["timestamp"].max().timestamp()
    latest = read_users(latest_rows(tables["user_interest"], "user_id", at), at, PARAMS)
    categories = categories_of(drift.items)
    vectors = category_weights(drift.items, drift.events["item_id"].to_numpy(), categories)
    counts = pd.DataFrame(vectors).groupby(drift.events["user_id"].to_numpy()).sum()
    truth = drift.truth.set_index("user_id")
    decayed_new = np.mean([categories[int(np.argmax(v))] == truth.loc[u, "to_category"] for u, v in zip(latest["user_id"], latest["interest"])])
    counted_old = np.mean([categories[int(np.argmax(counts.loc[u]))] == truth.loc[u, "from_category"] for u in counts.index])
    assert decayed_new > 0.8 and counted_old > 0.8


def test_event_weights_scale_the_interest_each_event_adds(drift):
    weighted = FeaturesConfig(value_mode="value", event_weights={"rating": 2.0})
    tables = build(drift.events, drift.items, weighted)
    at = drift.events["timestamp"].max().timestamp()
    got = as_of(latest_rows(tables["user_interest"], "user_id", at), at)
    past = drift.events
    times = seconds(past["timestamp"])
    vectors = category_weights(drift.items, past["item_id"].to_numpy(), categories_of(drift.items))
    decay = np.exp2(-(at - times) / (PARAMS.user_half_life_days * SECONDS_PER_DAY))
    factor = 2.0 * past["value"].to_numpy() * decay
    for user in np.unique(past["user_id"]):
        mask = past["user_id"].to_numpy() == user
        np.testing.assert_allclose(got[int(user)], (vectors[mask] * factor[mask, None]).sum(axis=0), rtol=1e-5)
    with pytest.raises(ValueError, match="no weight for event type"):
        build(drift.events, drift.items, FeaturesConfig(event_weights={"click": 1.0}))


def lm_vectors(items: pd.DataFrame, dim: int = 16) -> tuple[np.ndarray, np.ndarray]:
    item_ids = np.sort(items["item_id"].to_numpy())
    vectors = np.random.default_rng(1).normal(size=(len(item_ids), dim))
    return item_ids, (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def batch_lm(events: pd.DataFrame, item_ids: np.ndarray, vectors: np.ndarray) -> dict[int, np.ndarray]:
    """Independent recompute: each user's sum of w 2^(-age/h) v over sum of w 2^(-age/h)."""
    at = seconds(events["timestamp"]).max()
    weights = np.exp2(-(at - seconds(events["timestamp"])) / (PARAMS.user_half_life_days * SECONDS_PER_DAY))
    rows = np.searchsorted(item_ids, events["item_id"].to_numpy())
    out = {}
    for user in np.unique(events["user_id"]):
        mask = events["user_id"].to_numpy() == user
        out[int(user)] = (vectors[rows[mask]] * weights[mask, None]).sum(axis=0) / weights[mask].sum()
    return out


def stored_lm(cfg: FeaturesConfig, events: pd.DataFrame, item_ids, vectors):
    write_tables({"user_lm_profile": lm_profile_table(events, item_ids, vectors, PARAMS)}, cfg.profiles_dir)
    store = open_store(cfg.store)
    apply(store, repository(cfg.out_dir, cfg.profiles_dir))
    end = events["timestamp"].max().to_pydatetime() + timedelta(seconds=1)
    materialize(store, events["timestamp"].min().to_pydatetime(), end, LM_VIEWS)
    return store


def test_lm_profiles_online_and_point_in_time_equal_a_batch_recompute(store_cfg, drift):
    item_ids, vectors = lm_vectors(drift.items)
    store = stored_lm(store_cfg, drift.events, item_ids, vectors)
    users = sorted(drift.events["user_id"].unique())
    online = online_lm_profiles(store, [*users, 424242])
    expected = batch_lm(drift.events, item_ids, vectors)
    for user, profile in zip(users, online["lm_profile"]):
        np.testing.assert_allclose(profile, expected[int(user)], rtol=1e-4, atol=1e-6)
    assert online["lm_profile"].iloc[-1] is None  # a user with no events has no profile
    # Point in time: halfway between a user's 10th and 11th events only the first 10 count.
    user = int(users[0])
    mine = drift.events[drift.events["user_id"] == user].sort_values("timestamp")
    times = seconds(mine["timestamp"])
    middle = (times[9] + times[10]) / 2
    rows = historical(store, pd.DataFrame({"user_id": [user], "event_timestamp": pd.to_datetime([middle], unit="s", utc=True)}), LM_FEATURES)
    np.testing.assert_allclose(rows["lm_profile"].iloc[0], batch_lm(mine.iloc[:10], item_ids, vectors)[user], rtol=1e-4, atol=1e-6)


def test_live_events_update_lm_profiles_like_a_batch_recompute(store_cfg, drift):
    item_ids, vectors = lm_vectors(drift.items)
    events = drift.events.sort_values("timestamp", kind="stable").reset_index(drop=True)
    cut = int(len(events) * 0.8)
    store = stored_lm(store_cfg, events.iloc[:cut], item_ids, vectors)
    late = events.iloc[cut - 5 : cut - 4].assign(item_id=int(events["item_id"].iloc[0]))
    late["timestamp"] = late["timestamp"] - pd.Timedelta(days=2)  # older than the stored state
    stranger = events.iloc[cut : cut + 1].assign(user_id=424242)  # a user with no stored profile
    arriving = pd.concat([events.iloc[cut:], late, stranger], ignore_index=True)
    update_lm_profiles(store, arriving, item_ids, vectors, PARAMS)
    every = pd.concat([events, late, stranger], ignore_index=True)
    users = sorted(every["user_id"].unique())
    online = online_lm_profiles(store, users)
    expected = batch_lm(every, item_ids, vectors)
    for user, profile in zip(users, online["lm_profile"]):
        np.testing.assert_allclose(profile, expected[int(user)], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("chunk_events", [7, 100, None])
def test_feature_tables_in_slices_of_users_are_the_whole_tables(drift, chunk_events, tmp_path):
    """The features step writes each table a slice of whole users at a time: the same rows
    in one file as the table built at once."""
    from features.store import build_chunks, write_chunks

    whole = build(drift.events, drift.items, PARAMS)
    for name, parts in build_chunks(drift.events, drift.items, PARAMS, chunk_events).items():
        rows = write_chunks(parts, tmp_path / f"{name}.parquet")
        back = pd.read_parquet(tmp_path / f"{name}.parquet")
        assert rows == len(whole[name]) == len(back)
        lists = [c for c in back.columns if back[c].dtype == object and c not in ("user_id", "item_id")]
        pd.testing.assert_frame_equal(back.drop(columns=lists), whole[name].drop(columns=lists))
        for column in lists:
            assert all(np.array_equal(a, b) for a, b in zip(back[column], whole[name][column])), column


def test_loading_online_a_window_of_days_at_a_time_leaves_the_same_state(store_cfg, drift, tmp_path):
    """Feast holds a load's rows in memory; ``materialize_window_days`` loads a window of days
    after another, and each user's online row is still their latest."""
    start = drift.events["timestamp"].min().to_pydatetime()
    end = drift.events["timestamp"].max().to_pydatetime() + timedelta(seconds=1)
    whole, _ = stored(store_cfg, drift.events, drift.items)
    windowed_cfg = store_cfg.model_copy(update={
        "out_dir": tmp_path / "w-features", "profiles_dir": tmp_path / "w-profiles",
        "store": store_cfg.store.model_copy(update={"project": store_cfg.store.project + "w", "local_dir": tmp_path / "w-feast",
                                                    "postgres_schema": store_cfg.store.postgres_schema + "w",
                                                    "redis": "127.0.0.1:6379,db=4"})})
    write_tables(build(drift.events, drift.items, windowed_cfg), windowed_cfg.out_dir)
    windowed = open_store(windowed_cfg.store)
    apply(windowed, repository(windowed_cfg.out_dir, windowed_cfg.profiles_dir))
    days = (end - start).days / 7  # seven windows or so
    materialize(windowed, start, end, window_days=days)
    assert len(windowed.get_feature_view(DECAY_VIEWS[0]).materialization_intervals) >= 7
    users, items = sorted(drift.events["user_id"].unique()), sorted(drift.events["item_id"].unique())
    pd.testing.assert_frame_equal(online_users(windowed, users), online_users(whole, users))
    pd.testing.assert_frame_equal(online_items(windowed, items), online_items(whole, items))
    if windowed_cfg.store.profile == "production":
        from features.store import drop_production

        drop_production(windowed_cfg.store)
