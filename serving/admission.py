"""Which times and live events the service admits: the clock window, and duplicates.

The clock is a setting (``serving.clock``), never the latest event: a single event stamped
with today's date used to move "now" from 2003 to 2026 for every user, decaying all their
interest at once. ``data`` fixes now at the training data's latest event (replays, demos);
``wall`` is the system clock (live). Times outside the window around it are refused (409).

An event is a duplicate when its user, item, type, value (to 1e-6) and timestamp (to the
microsecond) equal an event already taken, training events included: posting it again is
a no-op, so a client may retry a batch it got no answer for. Keys are 64-bit hashes, kept
as a sorted array for the training events (8 bytes each: 8 MB for ml-1m's million, where a
set of tuples would be ~150 MB per worker) and a set for live ones.
"""
from __future__ import annotations

import time
import zlib
from datetime import datetime, timezone

import numpy as np
import pandas as pd

from flows.config import ClockConfig
from serving.schemas import OutsideClock


class Clock:
    def __init__(self, config: ClockConfig, data_now: float) -> None:
        self.config, self.data_now = config, float(data_now)

    def now(self) -> float:
        return self.data_now if self.config.kind == "data" else time.time()

    def check_events(self, seconds: np.ndarray) -> None:
        """Every event time within [now - past_s, now + future_s]; names the first outside."""
        now = self.now()
        low, high = now - self.config.past_s, now + self.config.future_s
        outside = np.flatnonzero((seconds < low) | (seconds > high))
        if len(outside):
            i = int(outside[0])
            raise _outside(["body", i, "timestamp"], f"event {i}: timestamp {_iso(seconds[i])} is outside the service "
                           f"clock's window [{_iso(low)}, {_iso(high)}] ({self.config.kind} clock)")

    def check_at(self, at: datetime | None, now: float) -> float:
        """The moment a recommendation is for: ``at``, within [now - future_s, now + ahead_s]
        (``now``: read once per batch, so that a wall clock keeps one batch one group)."""
        if at is None:
            return now
        when = at.timestamp()
        low, high = now - self.config.future_s, now + self.config.ahead_s
        if not low <= when <= high:
            raise _outside(["body", "context", "at"], f"context.at {at.isoformat()} is outside the service clock's window "
                           f"[{_iso(low)}, {_iso(high)}] ({self.config.kind} clock)")
        return when


def _outside(loc: list, message: str) -> OutsideClock:
    error = OutsideClock(message)
    error.loc = loc  # type: ignore[attr-defined]
    return error


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(float(seconds), tz=timezone.utc).isoformat()


_MIX = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))


def _splitmix(x: np.ndarray) -> np.ndarray:
    x = x + _MIX[0]
    x = (x ^ (x >> np.uint64(30))) * _MIX[1]
    x = (x ^ (x >> np.uint64(27))) * _MIX[2]
    return x ^ (x >> np.uint64(31))


def _id_bits(ids: pd.Series) -> np.ndarray:
    """64 bits per id: an integer id's own, a string id's hash (the same in every process)."""
    if pd.api.types.is_integer_dtype(ids.dtype):
        return ids.to_numpy(np.int64).view(np.uint64)
    return pd.util.hash_array(ids.astype(str).to_numpy(dtype=object))


def event_keys(events: pd.DataFrame) -> np.ndarray:
    """A 64-bit key per event (user, item, type, value, timestamp)."""
    type_codes = events["event_type"].astype(str).map(lambda t: zlib.crc32(t.encode())).to_numpy(np.uint64)
    values = np.round(events["value"].to_numpy(np.float64) * 1e6).astype(np.int64).view(np.uint64)
    micros = events["timestamp"].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[us]").astype(np.int64)
    key = np.zeros(len(events), np.uint64)
    with np.errstate(over="ignore"):
        for part in (_id_bits(events["user_id"]), _id_bits(events["item_id"]), type_codes, values, micros.view(np.uint64)):
            key = _splitmix(key ^ part)
    return key


class SeenEvents:
    """Keys of every event taken so far: the training events and the live ones."""

    def __init__(self, training: pd.DataFrame) -> None:
        self._training = np.sort(event_keys(training)) if len(training) else np.empty(0, np.uint64)
        self._live: set[int] = set()

    def add(self, events: pd.DataFrame) -> None:
        self._live.update(int(k) for k in event_keys(events))

    def fresh(self, events: pd.DataFrame) -> np.ndarray:
        """A mask of the events not taken before and not repeated earlier in ``events``."""
        keys = event_keys(events)
        pos = np.minimum(np.searchsorted(self._training, keys), max(len(self._training) - 1, 0))
        known = (self._training[pos] == keys) if len(self._training) else np.zeros(len(keys), bool)
        first = np.zeros(len(keys), bool)
        first[np.unique(keys, return_index=True)[1]] = True
        return ~known & first & np.array([int(k) not in self._live for k in keys], dtype=bool)
