"""Deterministic synthetic ratings whose users drift from one category to another.

Each user prefers one category early on and another late. The late period is shorter
and holds fewer events, so an undecayed interest profile still names the old category
while a time-decayed one names the new: exactly the drift that decay has to recover.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.contract import TIMESTAMP_DTYPE, events_frame, items_frame, strict_events

_MICROS_PER_DAY = 86_400 * 1_000_000


@dataclass(frozen=True)
class SyntheticConfig:
    """Knobs of the drift data set; the defaults make the planted contrast clear.

    Attributes:
        n_users: Number of users (ids 1..n_users).
        n_items: Number of items (ids 1..n_items); at least n_categories.
        n_categories: Number of categories, named 'cat0', 'cat1', ...
        category_names: Words to name the categories instead (at least n_categories), for
            tests that read categories as text (LM topics).
        events_per_user: Ratings per user, at least 2 (one before and one after drift).
        start: First instant of the window, parsed by pd.Timestamp (naive means UTC).
        span_days: Length of the window in days.
        signal: Share of events on the user's current interest; the rest are noise.
        late_share: Share of a user's events after the drift.
        drift_window: Range, as fractions of the span, that drift times are drawn from.
        two_category_share: Share of items that carry a second category.
        seed: Seed of the numpy Generator; equal configs give equal data.
    """

    n_users: int = 200
    n_items: int = 300
    n_categories: int = 6
    events_per_user: int = 60
    start: str = "2020-01-01"
    span_days: float = 365.0
    # Noise keeps per-user profiles from being trivially one-hot.
    signal: float = 0.8
    # Below one half so that raw counts keep pointing at the old interest.
    late_share: float = 0.35
    # Late in the window so that the late period is also shorter than the early one.
    drift_window: tuple[float, float] = (0.75, 0.85)
    # Overlapping categories, as real genres overlap, so a category is not an item id.
    two_category_share: float = 0.4
    category_names: tuple[str, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        """Reject configs that cannot produce a drift for every user."""
        lo, hi = self.drift_window
        checks = {
            "n_users >= 1": self.n_users >= 1,
            "n_categories >= 2": self.n_categories >= 2,
            "n_items >= n_categories": self.n_items >= self.n_categories,
            "events_per_user >= 2": self.events_per_user >= 2,
            "span_days > 0": self.span_days > 0,
            "0 <= signal <= 1": 0.0 <= self.signal <= 1.0,
            "0 < late_share < 1": 0.0 < self.late_share < 1.0,
            "0 < drift_window[0] <= drift_window[1] < 1": 0.0 < lo <= hi < 1.0,
            "0 <= two_category_share <= 1": 0.0 <= self.two_category_share <= 1.0,
            "category_names empty or >= n_categories": not self.category_names
            or len(self.category_names) >= self.n_categories,
        }
        failed = [name for name, ok in checks.items() if not ok]
        if failed:
            raise ValueError(f"invalid SyntheticConfig: {', '.join(failed)}")


@dataclass(frozen=True)
class SyntheticData:
    """A generated data set and the drift planted in it.

    Attributes:
        events: Strict canonical events, sorted by timestamp.
        items: Canonical items table.
        truth: One row per user: user_id, from_category, to_category, drift_time.
        config: The config that produced the data.
    """

    events: pd.DataFrame
    items: pd.DataFrame
    truth: pd.DataFrame
    config: SyntheticConfig = field(default_factory=SyntheticConfig)


def category_name(index: int, names: tuple[str, ...] = ()) -> str:
    """The name of category number `index`: ``names[index]``, or 'cat0' for 0 without names."""
    return names[index] if names else f"cat{index}"


def make_drift_dataset(config: SyntheticConfig | None = None) -> SyntheticData:
    """Generate users whose interest moves from one category to another.

    Args:
        config: Generation settings; the defaults when None.

    Returns:
        Events, items and the per-user drift that was planted.
    """
    config = config or SyntheticConfig()
    rng = np.random.default_rng(config.seed)
    primary, second = _item_categories(rng, config)
    from_cat, to_cat = _user_interests(rng, config)
    start_us = _start_micros(config.start)
    span_us = int(round(config.span_days * _MICROS_PER_DAY))
    drift_us = (rng.uniform(*config.drift_window, size=config.n_users) * span_us).astype(np.int64)
    user, late, offset_us = _event_times(rng, config, drift_us, span_us)
    on_interest = rng.random(len(user)) < config.signal
    interest = np.where(late, to_cat[user], from_cat[user])
    focused = _pick_from_pools(rng, _category_pools(primary, second, config.n_categories), interest)
    # Noise is drawn over the whole catalogue, so it can hit any category, the old one included.
    item = np.where(on_interest, focused, rng.integers(0, config.n_items, size=len(user)))
    value = _ratings(rng, on_interest)
    events = _events_table(user, item, value, start_us + offset_us)
    truth = pd.DataFrame(
        {
            "user_id": np.arange(1, config.n_users + 1, dtype=np.int64),
            "from_category": [category_name(c, config.category_names) for c in from_cat],
            "to_category": [category_name(c, config.category_names) for c in to_cat],
            "drift_time": _utc(start_us + drift_us),
        }
    )
    return SyntheticData(events, _items_table(rng, primary, second, config.category_names), truth, config)


def _events_table(user: np.ndarray, item: np.ndarray, value: np.ndarray, stamps_us: np.ndarray) -> pd.DataFrame:
    """Strict canonical events in time order, from 0-based user and item indices."""
    # Stable sort: ties keep user order, so the file order is reproducible.
    order = np.argsort(stamps_us, kind="stable")
    frame = events_frame(
        pd.Series(user[order] + 1),
        pd.Series(item[order] + 1),
        pd.Series(value[order]),
        _utc(stamps_us[order]),
    )
    return strict_events(frame)


def _start_micros(start: str) -> int:
    """Microseconds since the epoch of `start`, read as UTC when it has no zone."""
    stamp = pd.Timestamp(start)
    stamp = stamp.tz_localize("UTC") if stamp.tz is None else stamp.tz_convert("UTC")
    # Timestamp.value is in nanoseconds whatever the unit, so divide a Timedelta instead.
    return int((stamp - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(microseconds=1))


def _utc(micros: np.ndarray) -> pd.Series:
    """Epoch microseconds -> a canonical UTC timestamp series."""
    naive = pd.Series(np.asarray(micros, dtype=np.int64).view("datetime64[us]"))
    return naive.dt.tz_localize("UTC").astype(TIMESTAMP_DTYPE)


def _item_categories(rng: np.random.Generator, config: SyntheticConfig) -> tuple[np.ndarray, np.ndarray]:
    """Primary and optional second category per item (-1 where there is none)."""
    n, k = config.n_items, config.n_categories
    # Round-robin before shuffling guarantees every category has items to sample from.
    primary = rng.permutation(np.arange(n) % k)
    other = (primary + rng.integers(1, k, size=n)) % k
    second = np.where(rng.random(n) < config.two_category_share, other, -1)
    return primary, second


def _user_interests(rng: np.random.Generator, config: SyntheticConfig) -> tuple[np.ndarray, np.ndarray]:
    """Early and late category per user; a non-zero shift makes them always differ."""
    k = config.n_categories
    early = rng.integers(0, k, size=config.n_users)
    late = (early + rng.integers(1, k, size=config.n_users)) % k
    return early, late


def _event_times(
    rng: np.random.Generator, config: SyntheticConfig, drift_us: np.ndarray, span_us: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per event: user index, whether it falls after drift, microseconds since start."""
    per_user = config.events_per_user
    n_late = int(np.clip(round(config.late_share * per_user), 1, per_user - 1))
    user = np.repeat(np.arange(config.n_users), per_user)
    late = np.tile(np.arange(per_user) >= per_user - n_late, config.n_users)
    drift = drift_us[user]
    begin = np.where(late, drift, 0)
    end = np.where(late, span_us, drift)
    offset = begin + np.floor(rng.random(len(user)) * (end - begin)).astype(np.int64)
    # Float rounding could land an early event on the drift instant itself; keep it before.
    offset = np.minimum(offset, end - 1)
    return user, late, offset


def _category_pools(primary: np.ndarray, second: np.ndarray, n_categories: int) -> tuple[np.ndarray, ...]:
    """Item indices grouped by category, as (flat pool, start of each category, size)."""
    rows = np.concatenate([np.arange(len(primary)), np.flatnonzero(second >= 0)])
    cats = np.concatenate([primary, second[second >= 0]])
    order = np.lexsort((rows, cats))
    sizes = np.bincount(cats, minlength=n_categories)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return rows[order], starts, sizes


def _pick_from_pools(rng: np.random.Generator, pools: tuple[np.ndarray, ...], category: np.ndarray) -> np.ndarray:
    """Per event, a uniformly random item index among those carrying its category."""
    pool, starts, sizes = pools
    return pool[starts[category] + (rng.random(len(category)) * sizes[category]).astype(np.int64)]


def _ratings(rng: np.random.Generator, on_interest: np.ndarray) -> np.ndarray:
    """Half-star ratings in 0.5..5, higher on interest items than on noise."""
    raw = np.where(
        on_interest,
        rng.normal(4.0, 0.7, size=len(on_interest)),
        rng.normal(2.75, 1.0, size=len(on_interest)),
    )
    return np.clip(np.round(raw * 2.0) / 2.0, 0.5, 5.0)


def _items_table(
    rng: np.random.Generator, primary: np.ndarray, second: np.ndarray, names: tuple[str, ...] = ()
) -> pd.DataFrame:
    """The canonical items table: ids 1..n, MovieLens-style titles, category lists."""
    ids = np.arange(1, len(primary) + 1, dtype=np.int64)
    years = rng.integers(1950, 2021, size=len(ids))
    categories = [
        [category_name(p, names)] + ([category_name(s, names)] if s >= 0 else []) for p, s in zip(primary, second)
    ]
    titles = [f"Item {i} ({y})" for i, y in zip(ids, years)]
    return items_frame(pd.Series(ids), pd.Series(titles), categories)
