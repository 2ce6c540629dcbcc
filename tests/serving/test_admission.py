"""The service clock's windows and duplicate events, on small frames."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flows.config import ClockConfig
from serving.admission import Clock, SeenEvents
from serving.schemas import OutsideClock

NOW = 1_046_476_800.0  # 2003-03-01


def frame(rows: list[tuple]) -> pd.DataFrame:
    out = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "value", "timestamp"])
    out["timestamp"] = pd.to_datetime(out["timestamp"], unit="s", utc=True).astype("datetime64[us, UTC]")
    return out


def test_the_data_clock_stays_put_and_refuses_events_outside_its_window():
    clock = Clock(ClockConfig(kind="data", past_s=3600, future_s=300), NOW)
    clock.check_events(np.array([NOW - 3600, NOW, NOW + 300]))
    with pytest.raises(OutsideClock, match="event 1: timestamp 2003-03-01T00:05:01"):
        clock.check_events(np.array([NOW, NOW + 301]))
    with pytest.raises(OutsideClock, match="event 0"):
        clock.check_events(np.array([NOW - 3601]))
    assert clock.now() == NOW


def test_context_at_may_look_ahead_but_not_back_past_the_skew():
    clock = Clock(ClockConfig(kind="data", future_s=300, ahead_s=86_400), NOW)
    at = lambda s: datetime.fromtimestamp(s, tz=timezone.utc)  # noqa: E731
    assert clock.check_at(None, NOW) == NOW
    assert clock.check_at(at(NOW + 86_400), NOW) == NOW + 86_400
    for outside in (NOW - 301, NOW + 86_401):
        with pytest.raises(OutsideClock, match="context.at"):
            clock.check_at(at(outside), NOW)


def test_the_wall_clock_is_the_system_time():
    now = datetime.now(timezone.utc).timestamp()
    assert abs(Clock(ClockConfig(kind="wall"), NOW).now() - now) < 60


def test_an_event_is_new_once_whether_seen_in_training_live_or_earlier_in_its_batch():
    seen = SeenEvents(frame([(1, 10, "rating", 4.0, NOW - 100)]))
    batch = frame([
        (1, 10, "rating", 4.0, NOW - 100),  # a training event
        (1, 10, "rating", 4.5, NOW - 100),  # another value
        (1, 10, "rating", 4.0, NOW - 99),  # another time
        (2, 10, "rating", 4.0, NOW - 100),  # another user
        (2, 10, "rating", 4.0, NOW - 100),  # repeated within the batch
        (1, 11, "view", 4.0, NOW - 100),  # another item and type
    ])
    assert list(seen.fresh(batch)) == [False, True, True, True, False, True]
    seen.add(batch)
    assert not seen.fresh(batch).any()


def test_string_ids_key_events_the_same_in_every_process_and_tell_duplicates():
    import subprocess
    import sys

    from serving.admission import event_keys

    taken = frame([("C00017", "SKU-1", "purchase", 1.0, NOW), ("C00018", "SKU-1", "purchase", 1.0, NOW)])
    seen = SeenEvents(taken)
    again = frame([("C00017", "SKU-1", "purchase", 1.0, NOW), ("C00017", "SKU-2", "purchase", 1.0, NOW),
                   ("C00017", "SKU-2", "purchase", 1.0, NOW)])
    assert seen.fresh(again).tolist() == [False, True, False]
    code = ("import pandas as pd; from serving.admission import event_keys; "
            "f = pd.DataFrame({'user_id': ['C00017'], 'item_id': ['SKU-1'], 'event_type': ['purchase'], 'value': [1.0], "
            f"'timestamp': pd.to_datetime([{NOW}], unit='s', utc=True).astype('datetime64[us, UTC]')}}); print(int(event_keys(f)[0]))")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": "123", "PATH": ""}, cwd=Path(__file__).resolve().parents[2])
    assert int(other.stdout) == int(event_keys(taken.iloc[:1])[0])
