"""Evaluation splits of a validated events table (BENCHMARK.md, section "Protocols").

- P1 ``split_p1``: global temporal split (train on the past, test on the future).
- P2 ``split_p2``: per-user time-ordered leave-last-out.
- P0 ``split_p0``: RecBole's general protocol, only to cross-check metric code.

Each split is a pure function of a validated events table (``features.contract``) returning
``{"train", "valid", "test"}`` frames with the input's columns and dtypes and a fresh
RangeIndex; every input row kept by a split lands in exactly one part. ``split_stats`` and
``write_splits`` describe and persist the parts.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

PARTS = ("train", "valid", "test")


def split_p1(
    events: pd.DataFrame, fractions: Sequence[float] = (0.6, 0.2, 0.2)
) -> dict[str, pd.DataFrame]:
    """P1: global temporal split.

    Events are stably sorted by timestamp (ties keep file order). Part ``k`` takes the sorted
    rows ``[floor(c[k-1] * n), floor(c[k] * n))`` where ``c`` is the cumulative sum of
    ``fractions`` (``c[-1]`` is 0) and the last part always ends at ``n``, so float rounding
    can never drop a row. On ml-1m (n = 1,000,209) the cuts fall at 600,125 and 800,167.

    Args:
        events: validated events table, rows in file order.
        fractions: shares of train, valid and test; non-negative, summing to 1.

    Returns:
        ``{"train", "valid", "test"}`` frames, each in time order.

    Raises:
        ValueError: if ``fractions`` are not three non-negative shares summing to 1.
    """
    _check_shares(fractions, "fractions")
    ordered = _take(events, _time_order(events))
    n = len(ordered)
    cuts = [math.floor(c * n) for c in np.cumsum(fractions)[:-1]]
    bounds = [0, *cuts, n]
    return {
        name: ordered.iloc[lo:hi].reset_index(drop=True)
        for name, lo, hi in zip(PARTS, bounds[:-1], bounds[1:])
    }


def split_p2(events: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """P2: per-user time-ordered leave-last-out.

    Each user's events are stably sorted by timestamp (ties keep file order): the last one is
    test, the second-last valid, the rest train. A user with one event has only a test row and
    one with two has no train rows; RecBole instead keeps at least one train row per user
    (no ml-1m or ml-latest-small user is affected: all have at least 20 ratings).

    Args:
        events: validated events table, rows in file order.

    Returns:
        ``{"train", "valid", "test"}`` frames, each in global time order.
    """
    ordered = _take(events, _time_order(events))
    from_end = ordered.groupby("user_id", sort=False).cumcount(ascending=False).to_numpy()
    # 0 = train, 1 = valid, 2 = test: indices into PARTS
    part = np.select([from_end == 0, from_end == 1], [2, 1], default=0)
    return _partition(ordered, part)


def split_p0(
    events: pd.DataFrame,
    min_value: float = 3.0,
    core: int = 10,
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 2020,
) -> dict[str, pd.DataFrame]:
    """P0: RecBole's general protocol (value filter, k-core, random order, per-user ratios).

    Steps, as RecBole's ``Dataset`` does them:

    1. keep events with ``value >= min_value``;
    2. repeatedly drop every user and item with fewer than ``core`` events until none is left
       (removing an item can push a user below the core and vice versa);
    3. shuffle the whole table with ``torch.manual_seed(seed); torch.randperm(n)`` (drawn from
       a private generator seeded identically, so torch's global state is left alone);
    4. group by user in order of first appearance in the shuffled table, keep the shuffled order
       inside each group, and split each group by RecBole's ``_calcu_split_ids`` counts
       (see ``_recbole_counts``).

    On ml-1m this keeps 834,449 events.

    Args:
        events: validated events table, rows in file order.
        min_value: smallest value kept.
        core: minimum number of events of every remaining user and item.
        ratios: train, valid and test shares; normalised by their sum like RecBole does.
        seed: torch seed of the shuffle.

    Returns:
        ``{"train", "valid", "test"}`` frames, rows in RecBole's order (grouped by user).

    Raises:
        ValueError: if ``ratios`` are not three non-negative shares.
    """
    _check_shares(ratios, "ratios", normalised=False)
    import torch  # heavy import, only P0 needs it

    kept = _k_core(events[events["value"].to_numpy() >= min_value], core)
    generator = torch.Generator().manual_seed(seed)
    shuffled = _take(kept, torch.randperm(len(kept), generator=generator).numpy())
    user_codes, _ = pd.factorize(shuffled["user_id"])  # codes follow first appearance
    grouped = np.argsort(user_codes, kind="stable")
    codes = user_codes[grouped]
    sizes = np.bincount(codes)
    position = np.arange(len(codes)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    ends = np.cumsum(_recbole_counts(sizes, ratios), axis=1)[:, :-1]
    part = (position[:, None] >= ends[codes]).sum(axis=1)
    return _partition(_take(shuffled, grouped), part)


def split_stats(parts: Mapping[str, pd.DataFrame], repeats: bool = False) -> dict[str, dict[str, object]]:
    """JSON-serialisable description of split parts.

    Per part: ``rows``, ``users``, ``items``, ``first_timestamp`` and ``last_timestamp``
    (ISO 8601, None for an empty part). Valid and test also get ``evaluable_users``: users
    with at least one event in the fitting data (train for valid, train + valid for test) and
    at least one item in the part that the fitting data knows and (unless ``repeats``) they
    have not met in it: the users ``models.protocols.encode`` evaluates.

    Args:
        parts: ``{"train", "valid", "test"}`` frames as returned by the split functions.
        repeats: ``data.repeats``: a user's own past items count as ground truth.

    Returns:
        ``{part: {stat: value}}`` made of plain ints, strings and None.
    """
    stats = {name: _part_stats(parts[name]) for name in PARTS}
    fitting = {"valid": parts["train"], "test": pd.concat([parts["train"], parts["valid"]])}
    for name, fit in fitting.items():
        stats[name]["evaluable_users"] = _evaluable_users(fit, parts[name], repeats)
    return stats


def write_splits(
    parts: Mapping[str, pd.DataFrame], stats: Mapping[str, object], out_dir: str | Path
) -> list[Path]:
    """Write ``{train,valid,test}.parquet`` and ``stats.json`` to ``out_dir``.

    The same parts and stats give the same bytes (no index, sorted JSON keys).

    Args:
        parts: ``{"train", "valid", "test"}`` frames.
        stats: the output of ``split_stats``.
        out_dir: folder to write to; created if missing.

    Returns:
        The paths written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in PARTS:
        path = out / f"{name}.parquet"
        parts[name].to_parquet(path, index=False)
        paths.append(path)
    stats_path = out / "stats.json"
    stats_path.write_text(json.dumps(stats, sort_keys=True, indent=2) + "\n", encoding="utf-8")
    return [*paths, stats_path]


def _check_shares(shares: Sequence[float], name: str, normalised: bool = True) -> None:
    if len(shares) != len(PARTS) or any(s < 0 for s in shares) or sum(shares) <= 0:
        raise ValueError(f"{name} must be {len(PARTS)} non-negative shares, got {shares!r}")
    if normalised and not math.isclose(sum(shares), 1.0):
        raise ValueError(f"{name} must sum to 1, got {shares!r} (sum {sum(shares)})")


def _time_order(events: pd.DataFrame) -> np.ndarray:
    # A stable sort is what makes "ties keep file order" true.
    stamps = events["timestamp"].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy()
    return np.argsort(stamps, kind="stable")


def _take(events: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
    return events.iloc[rows].reset_index(drop=True)


def _partition(ordered: pd.DataFrame, part: np.ndarray) -> dict[str, pd.DataFrame]:
    return {name: ordered[part == k].reset_index(drop=True) for k, name in enumerate(PARTS)}


def _k_core(events: pd.DataFrame, core: int) -> pd.DataFrame:
    """Events whose users and items all keep at least ``core`` events (the maximal such set).

    Like RecBole, each round drops the events of every user and item below the core at once;
    the fixed point reached is the same whatever the order of removals.
    """
    users, _ = pd.factorize(events["user_id"])
    items, _ = pd.factorize(events["item_id"])
    keep = np.ones(len(events), dtype=bool)
    while True:
        user_count = np.bincount(users[keep], minlength=users.max(initial=-1) + 1)
        item_count = np.bincount(items[keep], minlength=items.max(initial=-1) + 1)
        low = keep & ((user_count[users] < core) | (item_count[items] < core))
        if not low.any():
            return events[keep]
        keep &= ~low


def _recbole_counts(totals: np.ndarray, ratios: Sequence[float]) -> np.ndarray:
    """Per-group part sizes by RecBole's ``Dataset._calcu_split_ids``, for all groups at once.

    Ratios are normalised by their sum; every part but the first gets ``int(ratio * total)``
    and the first the rest. Then, from the last part backwards, a part whose exact share is
    strictly between 0 and 1 takes one row from the first part, while the first has more
    than one row (RecBole's loop breaks there; the first part only shrinks, so checking the
    condition at each step is the same as breaking).

    Returns:
        Array of shape ``(len(totals), len(ratios))``.
    """
    total_ratio = sum(ratios)
    shares = [r / total_ratio for r in ratios]  # Python floats, as RecBole computes them
    totals = np.asarray(totals, dtype=np.int64)
    counts = np.stack([np.trunc(s * totals).astype(np.int64) for s in shares], axis=1)
    counts[:, 0] = totals - counts[:, 1:].sum(axis=1)
    for i in range(1, len(shares)):
        exact = shares[-i] * totals
        bump = (counts[:, 0] > 1) & (exact > 0) & (exact < 1)
        counts[:, -i] += bump
        counts[:, 0] -= bump
    return counts


def _part_stats(part: pd.DataFrame) -> dict[str, object]:
    stamps = part["timestamp"]
    return {
        "rows": int(len(part)),
        "users": int(part["user_id"].nunique()),
        "items": int(part["item_id"].nunique()),
        "first_timestamp": stamps.min().isoformat() if len(part) else None,
        "last_timestamp": stamps.max().isoformat() if len(part) else None,
    }


def _evaluable_users(fit: pd.DataFrame, part: pd.DataFrame, repeats: bool) -> int:
    n_fit = len(fit)
    users, user_ids = pd.factorize(_concat_column(fit, part, "user_id"))
    items, item_ids = pd.factorize(_concat_column(fit, part, "item_id"))
    # One int64 key per (user, item) pair: codes are dense, so the product cannot overflow.
    pairs, pair_ids = pd.factorize(users.astype(np.int64) * max(len(item_ids), 1) + items)
    # Dense codes let boolean lookups replace np.isin, which is slow on large arrays.
    fitted_user = _marked(users[:n_fit], len(user_ids))
    fitted_item = _marked(items[:n_fit], len(item_ids))
    fitted_pair = _marked(pairs[:n_fit], len(pair_ids))
    part_users, part_pairs = users[n_fit:], pairs[n_fit:]
    evaluable = fitted_user[part_users] & fitted_item[items[n_fit:]]
    if not repeats:
        evaluable &= ~fitted_pair[part_pairs]
    return int(_marked(part_users[evaluable], len(user_ids)).sum())


def _concat_column(first: pd.DataFrame, second: pd.DataFrame, column: str) -> np.ndarray:
    return np.concatenate([first[column].to_numpy(), second[column].to_numpy()])


def _marked(codes: np.ndarray, size: int) -> np.ndarray:
    mask = np.zeros(size, dtype=bool)
    mask[codes] = True
    return mask
