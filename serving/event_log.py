"""The durable log of live events: appended and flushed to disk before a request is answered.

One JSON object per line. A batch is written with one ``write`` and ``fsync`` under a lock,
so concurrent requests never interleave lines and an acknowledged event survives a crash.
A torn last line (a crash mid-write, never acknowledged) is skipped on reading.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)

COLUMNS = ["user_id", "item_id", "event_type", "value", "timestamp"]


class EventLog:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def append(self, events: pd.DataFrame) -> None:
        """Write ``events`` (the canonical event columns) and wait until they are on disk."""
        lines = "".join(
            json.dumps({"user_id": int(u), "item_id": int(i), "event_type": str(t), "value": float(v),
                        "timestamp": ts.isoformat()}) + "\n"
            for u, i, t, v, ts in zip(*(events[c] for c in COLUMNS))
        )
        with self._lock, self.path.open("a", encoding="utf-8") as handle:
            handle.write(lines)
            handle.flush()
            os.fsync(handle.fileno())

    def read(self) -> pd.DataFrame:
        """Every logged event, in order (canonical columns, UTC timestamps)."""
        records = []
        if self.path.exists():
            for number, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    log.warning("%s line %d is torn (a write cut short) and is skipped", self.path, number)
        frame = pd.DataFrame.from_records(records, columns=COLUMNS)
        return frame.astype({"user_id": "int64", "item_id": "int64", "event_type": "object", "value": "float64"}).assign(
            timestamp=pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601").astype("datetime64[us, UTC]")
        )
