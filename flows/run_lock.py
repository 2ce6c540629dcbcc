"""One run at a time: the lock every door to the pipeline takes (``decayrec run``, a step
command, ``decayrec repro``, the Prefect flow).

An exclusive ``flock`` on ``runs.lock``: the kernel drops it when its holder exits, however
it exits, so a run killed with ``kill -9`` never leaves a lock to wait on; the next run
takes it at once, and says whose it was. The holder writes who it is into the file for the
message a refused run prints. A process started inside a holder (``decayrec repro`` runs
``dvc repro``, whose stages are ``decayrec <step>``) inherits it through ``DECAYREC_RUN_LOCK``.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

log = logging.getLogger(__name__)

HELD_ENV = "DECAYREC_RUN_LOCK"  # the lock file a parent process holds for its children


class RunBusy(RuntimeError):
    """Another run holds the lock."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder(path: Path) -> dict | None:
    """Who last took the lock at ``path`` (pid, host, what, since), if anyone wrote it."""
    try:
        return json.loads(Path(path).read_text() or "null")
    except (OSError, ValueError):
        return None


@contextmanager
def run_lock(path: Path, what: str, wait_s: float = 0.0) -> Iterator[None]:
    """Hold the run lock at ``path`` for the block; ``what`` names the run in messages.

    Waits up to ``wait_s`` seconds for a run in flight to end, then raises ``RunBusy``
    naming it. Inside a process that already holds it (or whose parent does), a no-op."""
    path = Path(path).resolve()
    if os.environ.get(HELD_ENV) == str(path):
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    who = holder(path) or {}
                    raise RunBusy(f"another run holds {path}: {who.get('what', '?')} (pid {who.get('pid', '?')} on "
                                  f"{who.get('host', '?')}, since {who.get('since', '?')}); not started") from None
                time.sleep(min(1.0, max(deadline - time.monotonic(), 0.01)))
        before = holder(path)
        if before and before.get("host") == socket.gethostname() and not _alive(int(before.get("pid", 0))):
            log.warning("run lock %s: its last holder (%s, pid %s) is gone without releasing it; taking over",
                        path, before.get("what"), before.get("pid"))
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "what": what,
                                  "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}).encode(), 0)
        os.environ[HELD_ENV] = str(path)
        try:
            yield
        finally:
            os.environ.pop(HELD_ENV, None)
            os.ftruncate(fd, 0)  # released: the file no longer names a holder
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
