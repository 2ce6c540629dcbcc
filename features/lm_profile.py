"""The user's language-model profile as a feature: the decay-weighted mean of the text
vectors of the items they touched.

``mean = sum_j w_j d_j v_j / sum_j w_j d_j`` with ``d_j = 2^(-(t - t_j) / h)``, the decay
engine's weights (``features.user_half_life_days`` and the event weights). After a user's
last event numerator and denominator decay by the same factor, so the mean holds at any
later time and is stored as is; ``lm_weight`` (the denominator at ``lm_last_event_s``) decays
on read like every other state and is what lets a live event be folded in exactly: the new
mean is ``(mean * weight * d + w v) / (weight * d + w)`` (``features.live``).

One row per user and active day, as the other user tables, so that a point-in-time join
returns the profile a training example may see. Items without a vector add nothing (not
even weight): the mean stays a mean of real vectors.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

from features.decay import SECONDS_PER_DAY, exponential
from features.ids import plain
from features.interest import _day_last, _sorted_events, decayed_states, key_slices, weights

if TYPE_CHECKING:
    from flows.config import FeaturesConfig


def vector_rows(item_ids: np.ndarray, known_ids: np.ndarray) -> np.ndarray:
    """Row of each item in the sorted ``known_ids``, or -1 where it has no vector."""
    pos = np.clip(np.searchsorted(known_ids, item_ids), 0, max(len(known_ids) - 1, 0))
    found = (known_ids[pos] == item_ids) if len(known_ids) else np.zeros(len(item_ids), dtype=bool)
    return np.where(found, pos, -1)


def lm_profile_table(
    events: pd.DataFrame, item_ids: np.ndarray, vectors: np.ndarray, params: FeaturesConfig
) -> pd.DataFrame:
    """One row per user and active day: the profile after that day's last event.

    Args:
        events: Validated events (``user_id``, ``item_id``, ``event_type``, ``value``, ``timestamp``).
        item_ids: Sorted ids of the items that have vectors.
        vectors: ``(len(item_ids), dim)`` item vectors (unit rows from ``models.embeddings``).
        params: Half-life and event weights.

    Returns:
        ``user_id``, ``event_timestamp``, ``lm_profile`` (float32 list), ``lm_weight``,
        ``lm_last_event_s``.
    """
    return pd.concat(list(lm_profile_chunks(events, item_ids, vectors, params)), ignore_index=True)


def lm_profile_chunks(
    events: pd.DataFrame, item_ids: np.ndarray, vectors: np.ndarray, params: FeaturesConfig, chunk_events: int | None = None
) -> Iterator[pd.DataFrame]:
    """``lm_profile_table`` in parts, each from whole users' events, at most ``chunk_events``
    of them (None: one part): the (user-days x dim) float64 states of 1M events take 3.4 GB."""
    keys, seconds, order = _sorted_events(events, "user_id")
    rows = vector_rows(events["item_id"].to_numpy()[order], np.asarray(item_ids))
    each = weights(params, events["event_type"].to_numpy()[order], events["value"].to_numpy()[order])
    each = np.where(rows >= 0, each, 0.0)
    for a, b in key_slices(keys, chunk_events):
        yield _profiles(keys[a:b], seconds[a:b], rows[a:b], each[a:b], np.asarray(vectors, dtype=np.float64), params)


def _profiles(keys: np.ndarray, seconds: np.ndarray, rows: np.ndarray, each: np.ndarray, vectors: np.ndarray,
              params: FeaturesConfig) -> pd.DataFrame:
    """The profile table of events sorted by user and time (``rows``: their vector rows, -1
    for none; ``each``: their weights)."""
    # Sum each user-day's events at the day's last event first: the recurrence then runs
    # over user-days, and the (events x dim) matrix is never built.
    last = _day_last(keys, seconds)
    group = np.cumsum(np.r_[True, last[:-1]]) - 1 if len(keys) else np.empty(0, np.int64)
    day_seconds = seconds[last]
    factor = each * exponential((day_seconds[group] - seconds) / SECONDS_PER_DAY, params.user_half_life_days)
    known = rows >= 0
    per_day = sp.csr_matrix((factor[known], (group[known], rows[known])), shape=(int(last.sum()), len(vectors)))
    day_sums = np.c_[per_day @ vectors, np.bincount(group, factor, int(last.sum()))]
    states = decayed_states(keys[last], day_seconds, day_sums, params.user_half_life_days)
    total = states[:, -1:]
    mean = np.divide(states[:, :-1], total, out=np.zeros_like(states[:, :-1]), where=total > 0).astype(np.float32)
    return pd.DataFrame(
        {
            "user_id": plain(keys[last]),
            "event_timestamp": pd.to_datetime(day_seconds, unit="s", utc=True),
            "lm_profile": list(mean),
            "lm_weight": total[:, 0].astype(np.float32),
            "lm_last_event_s": day_seconds.astype(np.int64),
        }
    )


def unit_profiles(rows, dim: int) -> np.ndarray:
    """``(rows, dim)`` unit profiles for cosine scoring from ``rows["lm_profile"]`` (a
    DataFrame's column or a list); zeros where a user has none."""
    values = rows["lm_profile"]
    out = np.zeros((len(values), dim), dtype=np.float32)
    for i, value in enumerate(values):
        if value is not None and len(value) == dim:
            out[i] = value
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)
