"""Time-decayed feature tables for users and items, stored as decay-on-read state.

Exponential decay lets a feature row hold (score, time of last event) and still be exact at
any later moment: the reader multiplies by 2^(-(t - t_last) / half_life). So each table has
one row per key and day (the state after that day's last event), with ``event_timestamp`` =
that event's time, and Feast's point-in-time join returns exactly the state a training
example may see. ``read_users``/``read_items`` turn stored rows into values at a query time.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from features.contract import seconds_of
from features.decay import SECONDS_PER_DAY, exponential
from features.ids import plain

if TYPE_CHECKING:
    from flows.config import FeaturesConfig


def weights(cfg: FeaturesConfig, event_type, value) -> np.ndarray:
    """Interest each event adds before decay: its type's weight, times its value under
    ``value_mode: value`` (``features.event_weights``, ``features.value_mode``)."""
    from features.decay import event_weights

    return event_weights(event_type, value, cfg.event_weights, cfg.value_mode)


def categories_of(items: pd.DataFrame) -> list[str]:
    """The category vocabulary, sorted: position j of every interest vector is category j."""
    return sorted({c for row in items["categories"] for c in row})


def category_weights(items: pd.DataFrame, item_ids: np.ndarray, categories: list[str]) -> np.ndarray:
    """(len(item_ids), n_categories) float32: an item's unit of interest split over its categories."""
    column = {c: j for j, c in enumerate(categories)}
    lookup = dict(zip(items["item_id"].to_numpy(), items["categories"]))
    weights = np.zeros((len(item_ids), len(categories)), dtype=np.float32)
    for row, item in enumerate(item_ids):
        cats = [column[c] for c in lookup.get(item, []) if c in column]
        if cats:
            weights[row, cats] = 1.0 / len(cats)
    return weights


def decayed_states(keys: np.ndarray, seconds: np.ndarray, vectors: np.ndarray, half_life_days: float) -> np.ndarray:
    """Per event (rows sorted by key then time), the key's decayed sum right after it.

    state_k = state_{k-1} * 2^(-(t_k - t_{k-1}) / h) + v_k, a recurrence solved one event
    rank at a time across all keys at once, so the Python loop runs max-events-per-key
    times, not once per event; no exp of a large positive number is ever taken.
    """
    n = len(keys)
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if n else np.empty(0, int)
    rank = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    out = np.empty((n, vectors.shape[1]), dtype=np.float64)
    order = np.argsort(rank, kind="stable")
    bounds = np.searchsorted(rank[order], np.arange(rank.max() + 2 if n else 1))
    for r in range(len(bounds) - 1):
        idx = order[bounds[r] : bounds[r + 1]]
        if r == 0:
            out[idx] = vectors[idx]
        else:
            factor = exponential((seconds[idx] - seconds[idx - 1]) / SECONDS_PER_DAY, half_life_days)
            out[idx] = out[idx - 1] * factor[:, None] + vectors[idx]
    return out


def _day_last(keys: np.ndarray, seconds: np.ndarray) -> np.ndarray:
    """Rows (sorted by key, time) that are a key's last event of a UTC day."""
    day = np.floor(seconds / SECONDS_PER_DAY)
    return np.r_[(keys[1:] != keys[:-1]) | (day[1:] != day[:-1]), True] if len(keys) else np.empty(0, bool)


def _sorted_events(events: pd.DataFrame, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    seconds = seconds_of(events["timestamp"])
    keys = events[key].to_numpy()
    order = np.lexsort((seconds, keys))
    return keys[order], seconds[order], order


def key_slices(keys: np.ndarray, max_events: int | None) -> list[tuple[int, int]]:
    """``[start, stop)`` slices of sorted ``keys`` holding whole keys, each at most
    ``max_events`` long unless one key alone has more (None: one slice)."""
    n = len(keys)
    if max_events is None or n <= max_events:
        return [(0, n)]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    out, start = [], 0
    while start < n:
        # The last key start within reach, else the next one: a key is never split.
        reach = np.searchsorted(starts, start + max_events, side="right") - 1
        stop = starts[reach] if starts[reach] > start else (starts[reach + 1] if reach + 1 < len(starts) else n)
        stop = n if start + max_events >= n else stop
        out.append((start, int(stop)))
        start = int(stop)
    return out


def _recent(keys: np.ndarray, seconds: np.ndarray, keep: np.ndarray, horizon_s: float) -> list[np.ndarray]:
    """For each kept row, the key's event times within ``horizon_s`` before it (inclusive)."""
    out = []
    starts = np.searchsorted(keys, keys[keep], side="left")
    for row, start in zip(np.flatnonzero(keep), starts):
        first = start + np.searchsorted(seconds[start : row + 1], seconds[row] - horizon_s, side="left")
        out.append(seconds[first : row + 1].astype(np.int64))
    return out


def user_feature_table(events: pd.DataFrame, items: pd.DataFrame, params: FeaturesConfig) -> pd.DataFrame:
    """One row per user and active day: decayed category interest, count, recent event times."""
    return pd.concat(list(user_feature_chunks(events, items, params)), ignore_index=True)


def user_feature_chunks(events: pd.DataFrame, items: pd.DataFrame, params: FeaturesConfig,
                        chunk_events: int | None = None) -> Iterator[pd.DataFrame]:
    """``user_feature_table`` in parts, each from whole users' events, at most
    ``chunk_events`` of them (None: one part)."""
    categories = categories_of(items)
    keys, seconds, order = _sorted_events(events, "user_id")
    unique_items, inverse = np.unique(events["item_id"].to_numpy()[order], return_inverse=True)
    shares = category_weights(items, unique_items, categories)
    each = weights(params, events["event_type"].to_numpy()[order], events["value"].to_numpy()[order])
    for a, b in key_slices(keys, chunk_events):
        yield _user_rows(keys[a:b], seconds[a:b], shares[inverse[a:b]] * each[a:b, None], params)


def _user_rows(keys: np.ndarray, seconds: np.ndarray, vectors: np.ndarray, params: FeaturesConfig) -> pd.DataFrame:
    """The user table of events sorted by user and time, ``vectors`` their weighted interest."""
    with_count = np.c_[vectors, np.ones(len(keys), dtype=np.float32)]
    states = decayed_states(keys, seconds, with_count, params.user_half_life_days)
    keep = _day_last(keys, seconds)
    interest = states[keep, :-1].astype(np.float32)
    total = interest.sum(axis=1, keepdims=True)
    share = np.divide(interest, total, out=np.zeros_like(interest), where=total > 0)
    return pd.DataFrame(
        {
            "user_id": plain(keys[keep]),
            "event_timestamp": pd.to_datetime(seconds[keep], unit="s", utc=True),
            "interest": list(interest),
            "interest_share": list(share),
            "events_decayed": states[keep, -1].astype(np.float32),
            "last_event_s": seconds[keep].astype(np.int64),
            "recent_event_s": _recent(keys, seconds, keep, max(params.windows_days) * SECONDS_PER_DAY),
        }
    )


def item_feature_table(events: pd.DataFrame, params: FeaturesConfig) -> pd.DataFrame:
    """One row per item and active day: decayed popularity at a short and a long half-life."""
    keys, seconds, _ = _sorted_events(events, "item_id")
    ones = np.ones((len(keys), 1), dtype=np.float32)
    short = decayed_states(keys, seconds, ones, params.item_short_half_life_days)[:, 0]
    long = decayed_states(keys, seconds, ones, params.item_long_half_life_days)[:, 0]
    keep = _day_last(keys, seconds)
    return pd.DataFrame(
        {
            "item_id": plain(keys[keep]),
            "event_timestamp": pd.to_datetime(seconds[keep], unit="s", utc=True),
            "popularity_short": short[keep].astype(np.float32),
            "popularity_long": long[keep].astype(np.float32),
            "last_event_s": seconds[keep].astype(np.int64),
        }
    )


def _decay(values: np.ndarray, age_s: np.ndarray, half_life_days: float) -> np.ndarray:
    # Reading before the stored event (negative age) must not inflate it: the kernel clips at weight 1.
    return values * exponential(age_s / SECONDS_PER_DAY, half_life_days)


def decayed_count(events_decayed, last_event_s, at_seconds, params: FeaturesConfig) -> np.ndarray:
    """Stored decayed event counts (as of ``last_event_s``) read at ``at_seconds``."""
    age = np.asarray(at_seconds, dtype=np.float64) - np.asarray(last_event_s, dtype=np.float64)
    return _decay(np.asarray(events_decayed, dtype=np.float64), age, params.user_half_life_days)


def read_users(rows: pd.DataFrame, at_seconds: float | np.ndarray, params: FeaturesConfig) -> pd.DataFrame:
    """Stored user rows as values at ``at_seconds``: the features a model sees."""
    age = np.asarray(at_seconds, dtype=np.float64) - rows["last_event_s"].to_numpy(dtype=np.float64)
    age = np.broadcast_to(age, (len(rows),))
    interest = np.stack(rows["interest"].to_numpy()) if len(rows) else np.empty((0, 0))
    out = pd.DataFrame(
        {
            "user_id": rows["user_id"].to_numpy(),
            "interest": list(_decay(interest, age[:, None], params.user_half_life_days).astype(np.float32)),
            # Every category decays by the same factor, so the shares hold at any later time.
            "interest_share": list(rows["interest_share"]),
            "events_decayed": decayed_count(rows["events_decayed"].to_numpy(np.float64),
                                            rows["last_event_s"].to_numpy(np.float64), at_seconds, params),
            "days_since_last_event": age / SECONDS_PER_DAY,
        }
    )
    at = np.broadcast_to(np.asarray(at_seconds, dtype=np.float64), (len(rows),))
    for days in params.windows_days:
        out[f"events_{days}d"] = [
            int(np.count_nonzero((times > t - days * SECONDS_PER_DAY) & (times <= t)))
            for times, t in zip(rows["recent_event_s"], at)
        ]
    return out


def read_items(rows: pd.DataFrame, at_seconds: float | np.ndarray, params: FeaturesConfig) -> pd.DataFrame:
    """Stored item rows as values at ``at_seconds``; trend = short / long decayed popularity."""
    age = np.broadcast_to(
        np.asarray(at_seconds, dtype=np.float64) - rows["last_event_s"].to_numpy(dtype=np.float64), (len(rows),)
    )
    short = _decay(rows["popularity_short"].to_numpy(np.float64), age, params.item_short_half_life_days)
    long = _decay(rows["popularity_long"].to_numpy(np.float64), age, params.item_long_half_life_days)
    return pd.DataFrame(
        {
            "item_id": rows["item_id"].to_numpy(),
            "popularity_short": short,
            "popularity_long": long,
            "trend": np.divide(short, long, out=np.zeros_like(short), where=long > 0),
        }
    )


def latest_rows(table: pd.DataFrame, key: str, at_seconds: float) -> pd.DataFrame:
    """Each key's last stored row at or before ``at_seconds`` (the batch point-in-time view)."""
    past = table[table["last_event_s"] <= at_seconds]
    return past.sort_values([key, "last_event_s"], kind="stable").groupby(key, sort=True).tail(1).reset_index(drop=True)
