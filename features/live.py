"""Live events: fold new events into the stored decayed state and push it online.

For each touched key the new state is taken at T = the later of its stored last event and
its newest new event: stored state decayed to T plus every new event decayed to T. A late
event (older than the stored state) is added decayed to T without moving T, exactly what a
batch recompute over all events gives at T and at any later time. Readers decay from
``last_event_s`` (= T); the row's ``event_timestamp`` is T too, except when only late events
arrived: the online store keeps the newest row, so the rewrite is stamped one second after
the stored one.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from features.contract import seconds_of
from features.decay import SECONDS_PER_DAY, exponential
from features.ids import plain
from features.interest import categories_of, category_weights, weights
from features.lm_profile import vector_rows
from features.store import online_items, online_lm_profiles, online_users, push

if TYPE_CHECKING:
    from feast import FeatureStore

    from flows.config import FeaturesConfig


def _fold(stored: np.ndarray, stored_t: np.ndarray, keys: np.ndarray, seconds: np.ndarray,
          vectors: np.ndarray, half_life_days: float) -> tuple[np.ndarray, np.ndarray]:
    """New (state, time) per stored key; ``keys`` index rows of ``stored``; NaN time = no state."""
    latest = np.full(len(stored), -np.inf)
    np.maximum.at(latest, keys, seconds)
    at = np.fmax(latest, stored_t)
    state = np.where(np.isnan(stored_t)[:, None], 0.0,
                     stored * exponential((at - np.nan_to_num(stored_t))[:, None] / SECONDS_PER_DAY, half_life_days))
    contributions = vectors * exponential((at[keys] - seconds) / SECONDS_PER_DAY, half_life_days)[:, None]
    np.add.at(state, keys, contributions)
    return state, at


def _row_time(at: np.ndarray, stored_t: np.ndarray) -> pd.Series:
    bumped = np.where(at > np.nan_to_num(stored_t, nan=-np.inf), at, stored_t + 1.0)
    return pd.to_datetime(bumped, unit="s", utc=True)


def update_users(store: FeatureStore, events: pd.DataFrame, items: pd.DataFrame, params: FeaturesConfig) -> pd.DataFrame:
    """Fold ``events`` into the users' online state, push it, and return the pushed rows."""
    user_ids, keys = np.unique(events["user_id"].to_numpy(), return_inverse=True)
    current = online_users(store, user_ids)
    categories = categories_of(items)
    n_cat = len(categories)
    stored_t = current["last_event_s"].to_numpy(dtype=np.float64, na_value=np.nan)
    stored = np.stack([
        np.r_[np.asarray(v, dtype=np.float64), c] if v is not None and not np.isnan(t) else np.zeros(n_cat + 1)
        for v, c, t in zip(current["interest"], current["events_decayed"].fillna(0.0), stored_t)
    ])
    seconds = seconds_of(events["timestamp"])
    each = weights(params, events["event_type"].to_numpy(), events["value"].to_numpy())
    weighted = category_weights(items, events["item_id"].to_numpy(), categories) * each[:, None]
    vectors = np.c_[weighted, np.ones(len(events))]
    state, at = _fold(stored, stored_t, keys, seconds, vectors, params.user_half_life_days)
    horizon = max(params.windows_days) * SECONDS_PER_DAY
    recent = []
    for row, (old, t) in enumerate(zip(current["recent_event_s"], at)):
        times = np.r_[np.asarray(old if old is not None else [], dtype=np.int64), seconds[keys == row].astype(np.int64)]
        recent.append(np.sort(times[times > t - horizon]))
    interest = state[:, :-1].astype(np.float32)
    total = interest.sum(axis=1, keepdims=True)
    rows = pd.DataFrame(
        {
            "user_id": plain(user_ids),
            "event_timestamp": _row_time(at, stored_t),
            "interest": list(interest),
            "interest_share": list(np.divide(interest, total, out=np.zeros_like(interest), where=total > 0)),
            "events_decayed": state[:, -1].astype(np.float32),
            "last_event_s": at.astype(np.int64),
            "recent_event_s": recent,
        }
    )
    push(store, "user_interest_push", rows)
    return rows


def update_items(store: FeatureStore, events: pd.DataFrame, params: FeaturesConfig) -> pd.DataFrame:
    """Fold ``events`` into the items' decayed popularity online; return the pushed rows."""
    item_ids = np.unique(events["item_id"].to_numpy())
    rows = fold_items(online_items(store, item_ids), events, params)
    push(store, "item_popularity_push", rows)
    return rows


def fold_items(current: pd.DataFrame, events: pd.DataFrame, params: FeaturesConfig) -> pd.DataFrame:
    """New popularity rows of the items in ``events`` from their ``current`` stored rows (one
    per distinct item id in sorted order; nulls where none): the state a push writes."""
    item_ids, keys = np.unique(events["item_id"].to_numpy(), return_inverse=True)
    if not np.array_equal(current["item_id"].to_numpy(), item_ids):
        raise ValueError("current rows must be the events' distinct items, sorted")
    stored_t = current["last_event_s"].to_numpy(dtype=np.float64, na_value=np.nan)
    seconds = seconds_of(events["timestamp"])
    ones = np.ones((len(events), 1))
    pushed = {}
    for column, half_life in (("popularity_short", params.item_short_half_life_days),
                              ("popularity_long", params.item_long_half_life_days)):
        stored = current[column].to_numpy(dtype=np.float64, na_value=0.0)[:, None]
        state, at = _fold(stored, stored_t, keys, seconds, ones, half_life)
        pushed[column] = state[:, 0].astype(np.float32)
    return pd.DataFrame(
        {
            "item_id": plain(item_ids),
            "event_timestamp": _row_time(at, stored_t),
            **pushed,
            "last_event_s": at.astype(np.int64),
        }
    )


def update_lm_profiles(
    store: FeatureStore, events: pd.DataFrame, item_ids: np.ndarray, vectors: np.ndarray, params: FeaturesConfig
) -> pd.DataFrame:
    """Fold ``events`` into the users' LM profiles online; return the pushed rows.

    The stored mean times its weight is the decayed sum of vectors, so the fold is the same
    exact one as for the interest vectors (``features.lm_profile``); events on items without
    a vector add nothing.
    """
    user_ids, keys = np.unique(events["user_id"].to_numpy(), return_inverse=True)
    current = online_lm_profiles(store, user_ids)
    dim = vectors.shape[1]
    stored_t = current["lm_last_event_s"].to_numpy(dtype=np.float64, na_value=np.nan)
    weight = current["lm_weight"].to_numpy(dtype=np.float64, na_value=0.0)
    stored = np.zeros((len(user_ids), dim + 1))
    for row, (mean, t) in enumerate(zip(current["lm_profile"], stored_t)):
        if mean is not None and not np.isnan(t) and len(mean) == dim:
            stored[row] = np.r_[np.asarray(mean, dtype=np.float64) * weight[row], weight[row]]
    rows = vector_rows(events["item_id"].to_numpy(), np.asarray(item_ids))
    each = weights(params, events["event_type"].to_numpy(), events["value"].to_numpy()) * (rows >= 0)
    added = np.c_[np.where((rows >= 0)[:, None], vectors[np.maximum(rows, 0)], 0.0) * each[:, None], each]
    state, at = _fold(stored, stored_t, keys, seconds_of(events["timestamp"]), added, params.user_half_life_days)
    total = state[:, -1:]
    mean = np.divide(state[:, :-1], total, out=np.zeros_like(state[:, :-1]), where=total > 0).astype(np.float32)
    pushed = pd.DataFrame(
        {
            "user_id": plain(user_ids),
            "event_timestamp": _row_time(at, stored_t),
            "lm_profile": list(mean),
            "lm_weight": total[:, 0].astype(np.float32),
            "lm_last_event_s": at.astype(np.int64),
        }
    )
    push(store, "user_lm_profile_push", pushed)
    return pushed
