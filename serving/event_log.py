"""The durable log of live events: appended and flushed to disk before a request is answered.

One JSON object per line. A batch is written with one ``write`` and ``fsync`` under an
exclusive lock on the file (``fcntl.flock``), so concurrent requests and processes never
interleave lines and an acknowledged event survives a crash. The log is also how service
processes share live events: each reads what was appended since its last offset.
A torn last line (a crash mid-write, never acknowledged) is skipped on reading.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)

COLUMNS = ["user_id", "item_id", "event_type", "value", "timestamp"]


class EventLog:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive access across threads and processes (appends, and what goes with them)."""
        with self._lock, self.path.open("a", encoding="utf-8") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def append(self, events: pd.DataFrame) -> None:
        """Write ``events`` (the canonical event columns) and wait until they are on disk.
        Call inside ``locked()``."""
        lines = "".join(
            json.dumps({"user_id": int(u), "item_id": int(i), "event_type": str(t), "value": float(v),
                        "timestamp": ts.isoformat()}) + "\n"
            for u, i, t, v, ts in zip(*(events[c] for c in COLUMNS))
        )
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(lines)
            handle.flush()
            os.fsync(handle.fileno())

    def size(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def read(self) -> pd.DataFrame:
        """Every logged event, in order (canonical columns, UTC timestamps)."""
        return self.read_from(0)[0]

    def read_from(self, offset: int) -> tuple[pd.DataFrame, int]:
        """The events after byte ``offset`` (whole lines only) and the offset after them."""
        records = []
        if self.path.exists():
            with self.path.open("rb") as handle:
                handle.seek(offset)
                chunk = handle.read()
            complete = chunk[: chunk.rfind(b"\n") + 1]
            for line in complete.decode("utf-8").splitlines():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    log.warning("%s: a torn line after byte %d is skipped", self.path, offset)
            offset += len(complete)
        frame = pd.DataFrame.from_records(records, columns=COLUMNS)
        frame = frame.astype({"user_id": "int64", "item_id": "int64", "event_type": "object", "value": "float64"}).assign(
            timestamp=pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601").astype("datetime64[us, UTC]")
        )
        return frame, offset
