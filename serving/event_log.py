"""The durable log of live events: appended and flushed to disk before a request is answered.

One JSON object per line. A batch is written with one ``write`` and ``fsync`` under an
exclusive lock on the file (``fcntl.flock``), so concurrent requests and processes never
interleave lines and an acknowledged event survives a crash. The log is also how service
processes share live events: each reads what was appended since its last offset. Beside it,
``<log>.pushed`` records, per online store version, the offset up to which the logged events
are in that store: a new version gets the whole log on its first start, and events whose
push failed (a store outage) are pushed again with the next ones.

A log can still hold what it should not: a torn last line (a crash mid-write, never
acknowledged) or a line edited by hand. Neither stops a reader: a line that is not a valid
event is skipped, copied to ``<log>.quarantine`` with the reason, logged and counted; a torn
tail is moved there under the lock before the next append, so that append starts on a line
of its own and stays readable.
"""
from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pandas as pd

from features.ids import python_ids

log = logging.getLogger(__name__)

COLUMNS = ["user_id", "item_id", "event_type", "value", "timestamp"]
MAX_ID = 2**63 - 1
INTS = {"user_id": "int", "item_id": "int"}


def problem(record: object, kinds: dict[str, str] = INTS) -> str | None:
    """Why a parsed line is not an event the service could have written (ids of ``kinds``,
    "int" or "str" per column); None if it is."""
    if not isinstance(record, dict) or set(record) != set(COLUMNS):
        return f"not an object with exactly {COLUMNS}"
    for column in ("user_id", "item_id"):
        value = record[column]
        if kinds[column] == "str":
            if type(value) is not str or not value:
                return f"{column} is not a non-empty string"
        elif type(value) is not int or not 0 <= value <= MAX_ID:
            return f"{column} is not an integer in [0, 2^63)"
    if not isinstance(record["event_type"], str):
        return "event_type is not a string"
    value = record["value"]
    if type(value) not in (int, float) or not math.isfinite(value):
        return "value is not a finite number"
    try:
        stamp = datetime.fromisoformat(record["timestamp"])
    except (TypeError, ValueError):
        return "timestamp is not ISO 8601"
    if stamp.tzinfo is None:
        return "timestamp has no zone"
    return None


class EventLog:
    def __init__(self, path: str | Path, on_reject: Callable[[str], None] | None = None) -> None:
        self.path = Path(path)
        self.kinds = dict(INTS)  # the ids' kinds ("int" or "str"): the engine sets its bundle's
        self.quarantine = self.path.with_name(self.path.name + ".quarantine")
        self.marks = self.path.with_name(self.path.name + ".pushed")  # per online store: offset pushed up to
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._on_reject = on_reject
        self.rejected = {"invalid": 0, "torn": 0}  # lines this process set aside
        self._set_aside_at: set[int] = set()  # their offsets: a line read twice is set aside once

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive access across threads and processes (appends, and what goes with them)."""
        with self._lock, self.path.open("a", encoding="utf-8") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def repair(self) -> int:
        """Move a torn tail (bytes after the last newline) to the quarantine file and cut it
        off; the number of bytes moved. Call inside ``locked()``: no writer is mid-line then."""
        size = self.size()
        if not size:
            return 0
        with self.path.open("rb+") as handle:
            handle.seek(max(0, size - 65_536))
            tail = handle.read()
            cut = tail.rfind(b"\n")
            if cut == len(tail) - 1:
                return 0
            if cut < 0 and size > len(tail):  # a torn line longer than the window: find its start
                handle.seek(0)
                whole = handle.read()
                cut, tail, base = whole.rfind(b"\n"), whole, 0
            else:
                base = size - len(tail)
            torn = tail[cut + 1 :]
            self._set_aside(torn.decode("utf-8", "replace"), "torn", base + cut + 1)
            handle.truncate(base + cut + 1)
            handle.flush()
            os.fsync(handle.fileno())
        return len(torn)

    def append(self, events: pd.DataFrame) -> None:
        """Write ``events`` (the canonical event columns) and wait until they are on disk.
        Call inside ``locked()``."""
        self.repair()
        lines = "".join(
            json.dumps({"user_id": u, "item_id": i, "event_type": str(t), "value": float(v),
                        "timestamp": ts.isoformat()}) + "\n"
            for u, i, t, v, ts in zip(python_ids(events["user_id"]), python_ids(events["item_id"]),
                                      *(events[c] for c in COLUMNS[2:]))
        )
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(lines)
            handle.flush()
            os.fsync(handle.fileno())

    def pushed(self, store: str) -> int:
        """The offset up to which every logged event is in online store ``store`` (0: none
        is; a log shorter than that was replaced, and counts from 0). Call inside ``locked()``."""
        try:
            offset = int(json.loads(self.marks.read_text()).get(store, 0))
        except (OSError, ValueError, AttributeError):
            return 0
        return offset if offset <= self.size() else 0

    def mark_pushed(self, store: str, offset: int) -> None:
        """Record that online store ``store`` holds every event before ``offset``. Call inside
        ``locked()``."""
        from models.files import atomic_write

        try:
            marks = json.loads(self.marks.read_text())
        except (OSError, ValueError):
            marks = {}
        marks = {**(marks if isinstance(marks, dict) else {}), store: offset}
        atomic_write(self.marks, lambda f: f.write(json.dumps(marks, sort_keys=True).encode() + b"\n"))

    def size(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def read(self) -> pd.DataFrame:
        """Every valid logged event, in order (canonical columns, UTC timestamps)."""
        return self.read_from(0)[0]

    def read_from(self, offset: int) -> tuple[pd.DataFrame, int]:
        """The valid events after byte ``offset`` (whole lines only) and the offset after them."""
        records = []
        if self.path.exists():
            with self.path.open("rb") as handle:
                handle.seek(offset)
                chunk = handle.read()
            complete = chunk[: chunk.rfind(b"\n") + 1]
            at = offset
            for raw in complete.splitlines(keepends=True):
                try:
                    record = json.loads(raw)
                    reason = problem(record, self.kinds)
                except ValueError as error:  # JSON and UTF-8 errors alike
                    record, reason = None, f"not JSON ({error})"
                if reason is None:
                    records.append(record)
                else:
                    self._set_aside(raw.decode("utf-8", "replace").rstrip("\n"), "invalid", at, reason)
                at += len(raw)
            offset += len(complete)
        frame = pd.DataFrame.from_records(records, columns=COLUMNS)
        ids = {c: "int64" if self.kinds[c] == "int" else "object" for c in ("user_id", "item_id")}
        frame = frame.astype({**ids, "event_type": "object", "value": "float64"}).assign(
            timestamp=pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601").astype("datetime64[us, UTC]")
        )
        return frame, offset

    def _set_aside(self, text: str, kind: str, at: int, reason: str = "a torn last line (a write cut short)") -> None:
        if kind == "invalid" and at in self._set_aside_at:
            return
        self._set_aside_at.add(at)
        self.rejected[kind] += 1
        log.warning("%s: byte %d: %s; skipped, kept in %s", self.path, at, reason, self.quarantine)
        try:
            with self.quarantine.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps({"offset": at, "kind": kind, "reason": reason, "line": text[:10_000]}) + "\n")
        except OSError as error:  # the log itself stays readable; the warning above names the line
            log.warning("%s: cannot write the quarantine file (%s)", self.quarantine, error)
        if self._on_reject is not None:
            self._on_reject(kind)
