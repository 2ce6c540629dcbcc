"""The live event log: round trip, reading on from an offset, a torn last line, and appends
from many threads that never interleave."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pandas as pd

from serving.event_log import EventLog


def events(n: int, user: int = 1) -> pd.DataFrame:
    return pd.DataFrame({
        "user_id": [user] * n, "item_id": list(range(n)), "event_type": ["rating"] * n, "value": [4.0] * n,
        "timestamp": pd.to_datetime([1_000_000_000 + i for i in range(n)], unit="s", utc=True).astype("datetime64[us, UTC]"),
    })


def test_events_read_back_as_written_and_from_an_offset(tmp_path):
    log = EventLog(tmp_path / "live" / "events.jsonl")
    with log.locked():
        log.append(events(3))
    first, offset = log.read_from(0)
    pd.testing.assert_frame_equal(first, events(3))
    with log.locked():
        log.append(events(2, user=7))
    more, end = log.read_from(offset)
    assert list(more["user_id"]) == [7, 7] and end == log.size()
    assert log.read_from(end)[0].empty


def test_a_torn_last_line_is_left_for_later_and_never_half_read(tmp_path):
    log = EventLog(tmp_path / "events.jsonl")
    with log.locked():
        log.append(events(2))
    with log.path.open("a") as handle:
        handle.write('{"user_id": 1, "item_')  # a crash mid-write
    found, offset = log.read_from(0)
    assert len(found) == 2 and offset < log.size()


def test_concurrent_appends_keep_every_event_on_whole_lines(tmp_path):
    log = EventLog(tmp_path / "events.jsonl")

    def write(user: int) -> None:
        with log.locked():
            log.append(events(25, user=user))

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(write, range(40)))
    found = log.read()
    assert len(found) == 1000
    assert found.groupby("user_id")["item_id"].apply(list).map(lambda items: items == list(range(25))).all()
