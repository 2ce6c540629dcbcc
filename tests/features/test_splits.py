"""Tests of features.splits on small hand-built event tables with exact expected parts."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.contract import TIMESTAMP_DTYPE
from features.splits import (
    PARTS,
    split_p0,
    split_p1,
    split_p2,
    split_stats,
    write_splits,
)


def events(rows: list[tuple[int, int, int]], values: list[float] | None = None) -> pd.DataFrame:
    """A validated events table from (user, item, epoch seconds) rows, in the given order."""
    users, items, seconds = zip(*rows) if rows else ((), (), ())
    return pd.DataFrame(
        {
            "user_id": np.array(users, dtype="int64"),
            "item_id": np.array(items, dtype="int64"),
            "event_type": ["rating"] * len(rows),
            "value": np.array(values if values is not None else [4.0] * len(rows), dtype="float64"),
            "timestamp": pd.to_datetime(
                np.array(seconds, dtype="int64"), unit="s", utc=True
            ).astype(TIMESTAMP_DTYPE),
        }
    )


def items_of(parts: dict[str, pd.DataFrame]) -> dict[str, list[int]]:
    return {name: parts[name]["item_id"].tolist() for name in PARTS}


def counts_of(parts: dict[str, pd.DataFrame], user: int) -> list[int]:
    return [int((parts[name]["user_id"] == user).sum()) for name in PARTS]


# ---------------------------------------------------------------- P1


def test_p1_cuts_sorted_events_at_floor_of_cumulative_fraction() -> None:
    # Ten events whose item id is their time rank, given out of time order.
    ranks = [3, 9, 0, 7, 1, 8, 2, 6, 4, 5]
    parts = split_p1(events([(1, r, 100 + r) for r in ranks]))
    assert items_of(parts) == {"train": [0, 1, 2, 3, 4, 5], "valid": [6, 7], "test": [8, 9]}


def test_p1_floors_cut_points_when_shares_are_not_whole() -> None:
    # n = 7: cuts at floor(0.6 * 7) = 4 and floor(0.8 * 7) = 5.
    parts = split_p1(events([(1, i, i) for i in range(7)]))
    assert items_of(parts) == {"train": [0, 1, 2, 3], "valid": [4], "test": [5, 6]}


def test_p1_keeps_file_order_among_equal_timestamps() -> None:
    file_order = [5, 3, 9, 1, 7, 0, 8, 2, 6, 4]
    parts = split_p1(events([(1, i, 1_000) for i in file_order]))
    assert items_of(parts) == {
        "train": [5, 3, 9, 1, 7, 0],
        "valid": [8, 2],
        "test": [6, 4],
    }


def test_p1_ties_across_a_cut_are_split_by_file_order() -> None:
    rows = [(1, 10, 50), (1, 11, 50), (1, 12, 10), (1, 13, 50), (1, 14, 20)]
    frame = events(rows)
    parts = split_p1(frame, fractions=(0.4, 0.4, 0.2))
    assert items_of(parts) == {"train": [12, 14], "valid": [10, 11], "test": [13]}
    assert parts["train"].dtypes.equals(frame.dtypes)


def test_p1_and_p2_keep_file_order_among_many_ties() -> None:
    # Small arrays sort stably even with unstable algorithms; 300 rows on 3 timestamps do not.
    seconds = np.random.default_rng(0).integers(0, 3, size=300)
    frame = events([(i % 7, i, int(t)) for i, t in enumerate(seconds)])
    in_time = sorted(range(300), key=lambda i: seconds[i])  # Python's sort is stable
    parts = split_p1(frame)
    assert sum(items_of(parts).values(), []) == in_time
    last = {i % 7: i for i in in_time}  # later entries overwrite: each user's last event
    assert split_p2(frame)["test"]["item_id"].tolist() == [i for i in in_time if last[i % 7] == i]


@pytest.mark.parametrize("fractions", [(0.6, 0.2), (0.6, 0.3, 0.3), (1.2, -0.1, -0.1)])
def test_p1_rejects_bad_fractions(fractions: tuple[float, ...]) -> None:
    with pytest.raises(ValueError):
        split_p1(events([(1, 1, 1)]), fractions=fractions)


# ---------------------------------------------------------------- P2


def test_p2_last_is_test_second_last_valid_rest_train() -> None:
    rows = [(1, 13, 30), (2, 21, 5), (1, 11, 10), (1, 14, 40), (2, 22, 6), (1, 12, 20), (2, 23, 7)]
    parts = split_p2(events(rows))
    assert items_of(parts) == {"train": [21, 11, 12], "valid": [22, 13], "test": [23, 14]}


def test_p2_resolves_equal_timestamps_by_file_order() -> None:
    # User 1's last two events share a timestamp: the later line in the file is the test item.
    rows = [(1, 31, 500), (2, 41, 100), (1, 30, 500), (1, 29, 100), (2, 40, 100)]
    parts = split_p2(events(rows))
    assert items_of(parts) == {"train": [29], "valid": [41, 31], "test": [40, 30]}


def test_p2_users_with_one_or_two_events() -> None:
    parts = split_p2(events([(1, 1, 1), (2, 2, 1), (2, 3, 2)]))
    assert counts_of(parts, 1) == [0, 0, 1]
    assert counts_of(parts, 2) == [0, 1, 1]


# ---------------------------------------------------------------- P0


def test_p0_k_core_is_iterated_until_stable() -> None:
    # core 2. Users 1 and 2 both rate items 100 and 101: a stable block. User 4 has one event,
    # so it goes; then item 102 has one event left and goes; then user 3 has one event left
    # (on item 100) and goes too. One pass of user then item filtering would keep user 3.
    rows = [(1, 100, 1), (1, 101, 2), (2, 100, 3), (2, 101, 4)]
    rows += [(3, 100, 5), (3, 102, 6), (4, 102, 7)]
    parts = split_p0(events(rows), min_value=0.0, core=2)
    kept = pd.concat(parts.values())
    assert sorted(zip(kept["user_id"], kept["item_id"])) == [(1, 100), (1, 101), (2, 100), (2, 101)]


def test_p0_value_filter_comes_before_the_core() -> None:
    # User 3's low rating of item 101 goes first; user 3 then has a single event and is dropped.
    rows = [(1, 100, 1), (1, 101, 2), (2, 100, 3), (2, 101, 4), (3, 100, 5), (3, 101, 6)]
    values = [5.0, 4.0, 3.0, 5.0, 4.0, 2.5]
    kept = pd.concat(split_p0(events(rows, values), min_value=3.0, core=2).values())
    assert sorted(kept["user_id"].unique()) == [1, 2]
    assert len(kept) == 4


# Per-user sizes by RecBole's rule for 8:1:1: int(0.1 * n) for valid and test, the rest to
# train, then a part whose exact share is below 1 row takes one from train while train has
# more than one (test first).
RECBOLE_811 = {1: [1, 0, 0], 2: [1, 0, 1], 3: [1, 1, 1], 9: [7, 1, 1], 10: [8, 1, 1],
               15: [13, 1, 1], 19: [17, 1, 1], 20: [16, 2, 2], 30: [24, 3, 3]}  # fmt: skip


def test_p0_per_user_counts_follow_recbole_rule() -> None:
    # Each user's id is its number of events.
    rows = [(size, item, item) for size in RECBOLE_811 for item in range(size)]
    parts = split_p0(events(rows), min_value=0.0, core=1)
    assert {size: counts_of(parts, size) for size in RECBOLE_811} == RECBOLE_811


def test_p0_assigns_each_users_shuffled_events_in_order() -> None:
    torch = pytest.importorskip("torch")
    rows = [(user, 100 * user + item, item) for user in (1, 2, 3) for item in range(10 * user)]
    frame = events(rows)
    parts = split_p0(frame, min_value=0.0, core=1, seed=7)
    # The shuffle the protocol names: global seed, then randperm of the whole table.
    torch.manual_seed(7)
    shuffled = frame.iloc[torch.randperm(len(frame)).numpy()]
    # RecBole's order: users by first appearance in the shuffled table, each user's events in
    # shuffled order, cut by the per-user counts.
    expected: dict[str, list[int]] = {name: [] for name in PARTS}
    for user in shuffled["user_id"].drop_duplicates():
        mine = shuffled.loc[shuffled["user_id"] == user, "item_id"].tolist()
        train, valid, _ = RECBOLE_811[len(mine)]
        expected["train"] += mine[:train]
        expected["valid"] += mine[train : train + valid]
        expected["test"] += mine[train + valid :]
    assert items_of(parts) == expected


def test_p0_is_deterministic_per_seed() -> None:
    rows = [(user, item, user * 100 + item) for user in range(20) for item in range(15)]
    frame = events(rows)
    first, again = split_p0(frame, core=1), split_p0(frame, core=1)
    other = split_p0(frame, core=1, seed=1)
    for name in PARTS:
        pd.testing.assert_frame_equal(first[name], again[name])
    assert first["test"]["item_id"].tolist() != other["test"]["item_id"].tolist()
    assert [len(first[n]) for n in PARTS] == [len(other[n]) for n in PARTS] == [260, 20, 20]


def test_p0_leaves_torch_global_seed_alone() -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    split_p0(events([(1, i, i) for i in range(10)]), min_value=0.0, core=1)
    assert torch.equal(torch.rand(3), expected)


# ---------------------------------------------------------------- partition property

event_rows = st.lists(
    st.tuples(st.integers(0, 4), st.integers(0, 6), st.integers(0, 5)), min_size=0, max_size=60
)


def tagged(rows: list[tuple[int, int, int]]) -> pd.DataFrame:
    """Events whose value is their row number, so each row can be traced through a split."""
    return events(rows, [float(i) for i in range(len(rows))])


@settings(max_examples=60, deadline=None)
@given(rows=event_rows)
def test_p1_and_p2_partition_every_row(rows: list[tuple[int, int, int]]) -> None:
    for split in (split_p1, split_p2):
        parts = split(tagged(rows))
        tags = np.concatenate([parts[name]["value"].to_numpy() for name in PARTS])
        assert sorted(tags) == list(range(len(rows)))


@settings(max_examples=60, deadline=None)
@given(rows=event_rows, core=st.integers(1, 3))
def test_p0_partitions_the_rows_it_keeps(rows: list[tuple[int, int, int]], core: int) -> None:
    parts = split_p0(tagged(rows), min_value=0.0, core=core)
    tags = np.concatenate([parts[name]["value"].to_numpy() for name in PARTS])
    assert len(set(tags)) == len(tags)
    kept = pd.concat(parts.values())
    if len(kept):
        assert kept.groupby("user_id").size().min() >= core
        assert kept.groupby("item_id").size().min() >= core


# ---------------------------------------------------------------- stats and files


def hand_parts() -> dict[str, pd.DataFrame]:
    return {
        # users 1 and 2 have history; user 3 has none; user 4 makes items 102-104 known
        "train": events([(4, 102, 1), (4, 103, 2), (4, 104, 3), (1, 100, 10), (1, 101, 20), (2, 100, 30)]),
        # 1 meets a new item (evaluable); 2 only repeats; 3 has no history
        "valid": events([(1, 102, 40), (2, 100, 50), (3, 100, 60)]),
        # 1 only repeats a train item; 2 meets a new one; 3 now has history (valid) and a new item
        "test": events([(1, 101, 70), (2, 103, 80), (3, 104, 90), (3, 100, 95)]),
    }


def test_split_stats_on_hand_case() -> None:
    stats = split_stats(hand_parts())
    assert stats["valid"]["evaluable_users"] == 1
    assert stats["test"]["evaluable_users"] == 2
    assert "evaluable_users" not in stats["train"]
    assert stats["test"] == {
        "rows": 4,
        "users": 3,
        "items": 4,
        "first_timestamp": "1970-01-01T00:01:10+00:00",
        "last_timestamp": "1970-01-01T00:01:35+00:00",
        "evaluable_users": 2,
    }
    json.dumps(stats)


def test_split_stats_count_rebuys_where_the_data_set_repeats() -> None:
    # data.repeats: user 2's second 100 (valid) and user 1's second 101 (test) are ground truth.
    stats = split_stats(hand_parts(), repeats=True)
    assert (stats["valid"]["evaluable_users"], stats["test"]["evaluable_users"]) == (2, 3)


def test_split_stats_leave_out_items_the_fitting_data_never_met() -> None:
    # No model can rank item 200: user 1 is not evaluable on it, repeats or not.
    parts = {"train": events([(1, 100, 1)]), "valid": events([(1, 200, 2)]), "test": events([(1, 100, 3)])}
    assert split_stats(parts)["valid"]["evaluable_users"] == 0
    assert split_stats(parts, repeats=True)["valid"]["evaluable_users"] == 0


def test_split_stats_test_fitting_data_includes_valid() -> None:
    # The test item was met in valid: not new, so user 1 is not evaluable on test.
    parts = {
        "train": events([(2, 101, 0), (1, 100, 1)]),
        "valid": events([(1, 101, 2)]),
        "test": events([(1, 101, 3)]),
    }
    stats = split_stats(parts)
    assert (stats["valid"]["evaluable_users"], stats["test"]["evaluable_users"]) == (1, 0)


def test_split_stats_of_empty_part() -> None:
    parts = split_p1(events([(1, 1, 1), (1, 2, 2)]))
    stats = split_stats(parts)
    assert stats["valid"] == {
        "rows": 0, "users": 0, "items": 0, "first_timestamp": None, "last_timestamp": None,
        "evaluable_users": 0,
    }  # fmt: skip


def test_write_splits_is_byte_deterministic_and_round_trips(tmp_path) -> None:
    parts = hand_parts()
    stats = split_stats(parts)
    first = write_splits(parts, stats, tmp_path / "a")
    second = write_splits(parts, stats, tmp_path / "b" / "nested")
    names = ["train.parquet", "valid.parquet", "test.parquet", "stats.json"]
    assert [p.name for p in first] == names
    for a, b in zip(first, second):
        assert a.read_bytes() == b.read_bytes()
    for name in PARTS:
        back = pd.read_parquet(tmp_path / "a" / f"{name}.parquet")
        pd.testing.assert_frame_equal(back, parts[name])
    text = (tmp_path / "a" / "stats.json").read_text()
    assert json.loads(text) == stats
    assert text == json.dumps(stats, sort_keys=True, indent=2) + "\n"
