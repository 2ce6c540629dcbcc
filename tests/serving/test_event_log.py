"""The live event log: round trip, reading on from an offset, a torn last line repaired
before the next append, lines that are not events set aside, and appends from many threads
that never interleave."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import json

import pandas as pd
import pytest

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


def test_an_append_after_a_torn_tail_starts_on_its_own_line_and_is_read_back(tmp_path):
    reasons = []
    log = EventLog(tmp_path / "events.jsonl", on_reject=reasons.append)
    with log.locked():
        log.append(events(2))
    with log.path.open("a") as handle:
        handle.write('{"user_id": 1, "item_')  # a crash mid-write: never acknowledged
    with log.locked():
        log.append(events(1, user=9))
    found = log.read()
    assert list(found["user_id"]) == [1, 1, 9]
    assert reasons == ["torn"] and log.rejected == {"invalid": 0, "torn": 1}
    [kept] = [json.loads(line) for line in log.quarantine.read_text().splitlines()]
    assert kept["kind"] == "torn" and kept["line"] == '{"user_id": 1, "item_'


def test_a_torn_tail_longer_than_the_repair_window_is_cut_at_its_own_start(tmp_path):
    log = EventLog(tmp_path / "events.jsonl")
    with log.locked():
        log.append(events(3))
    whole = log.size()
    with log.path.open("a") as handle:
        handle.write('{"user_id": 1, "item_id": "' + "x" * 200_000)
    torn = log.size() - whole
    with log.locked():
        assert log.repair() == torn
    assert log.size() == whole and len(log.read()) == 3


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("garbage", "not JSON"),
        ('{"user_id": 1000000000000000000000000000000, "item_id": 1, "event_type": "rating", "value": 4.0, '
         '"timestamp": "2003-01-01T00:00:00+00:00"}', "user_id is not an integer"),
        ('{"user_id": -5, "item_id": 1, "event_type": "rating", "value": 4.0, "timestamp": "2003-01-01T00:00:00+00:00"}',
         "user_id is not an integer"),
        ('{"user_id": 1, "item_id": 1, "event_type": "rating", "value": NaN, "timestamp": "2003-01-01T00:00:00+00:00"}',
         "value is not a finite number"),
        ('{"user_id": 1, "item_id": 1, "event_type": "rating", "value": 4.0, "timestamp": 1046476800000}',
         "timestamp is not ISO 8601"),
        ('{"user_id": 1, "item_id": 1, "event_type": "rating", "value": 4.0, "timestamp": "2003-01-01T00:00:00"}',
         "timestamp has no zone"),
        ('{"user_id": 1, "item_id": 1, "value": 4.0, "timestamp": "2003-01-01T00:00:00+00:00"}', "not an object with exactly"),
        ("[1, 2]", "not an object with exactly"),
        ("\udcff", "not JSON"),
    ],
)
def test_a_line_that_is_not_an_event_is_set_aside_and_reading_goes_on(tmp_path, line, reason):
    log = EventLog(tmp_path / "events.jsonl")
    with log.locked():
        log.append(events(1))
    with log.path.open("a", encoding="utf-8", errors="surrogateescape") as handle:
        handle.write(line + "\n")
    with log.locked():
        log.append(events(1, user=3))
    found = log.read()
    assert list(found["user_id"]) == [1, 3] and log.rejected["invalid"] == 1
    assert list(log.read()["user_id"]) == [1, 3] and log.rejected["invalid"] == 1  # read again: set aside once
    [kept] = [json.loads(raw) for raw in log.quarantine.read_text().splitlines()]
    assert kept["kind"] == "invalid" and reason in kept["reason"]


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
