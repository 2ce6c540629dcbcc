"""What every run of the pipeline goes through, whichever door started it: the run lock
(``flows.run_lock``), a time limit per step, a status record, and a notice when it fails,
times out, is skipped, or trains a model the gate refuses.

The record (``runs.status``) keeps the last success and the last failure with its reason;
``decayrec status`` shows them with the served model's age. The notice is one JSON POST to
the URL in the environment variable ``runs.notify_env`` (unset: no notice); a receiver that
is down never fails the run.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone

from flows.config import Params, RunsConfig
from flows.run_lock import RunBusy, run_lock

log = logging.getLogger(__name__)


# Where each outcome goes in the status record: a timeout is a failure with its reason.
STATUS_KEY = {"succeeded": "last_success", "failed": "last_failure", "timed out": "last_failure", "skipped": "last_skipped"}


class StepTimeout(TimeoutError):
    """A step ran past its ``runs.timeout_s``."""


def timed_out(error: BaseException) -> bool:
    """A step past its time limit: ours (``decayrec``) or Prefect's task timeout."""
    if isinstance(error, StepTimeout):
        return True
    if "prefect" in sys.modules:
        from prefect.task_engine import TaskRunTimeoutError

        return isinstance(error, TaskRunTimeoutError)
    return False


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@contextmanager
def time_limit(seconds: float | None, step: str) -> Iterator[None]:
    """Raise ``StepTimeout`` in the block once ``seconds`` have passed (main thread only:
    elsewhere, as in Prefect's workers, the task's own timeout applies)."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(_signum, _frame):
        raise StepTimeout(f"step {step} ran past its time limit of {seconds:g} s (runs.timeout_s.{step})")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def notify(cfg: RunsConfig, event: dict) -> bool:
    """POST ``event`` as JSON to the notice URL, if one is set; False when it could not be sent."""
    url = os.environ.get(cfg.notify_env)
    if not url:
        return False
    request = urllib.request.Request(url, data=json.dumps(event).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=cfg.notify_timeout_s):
            return True
    except OSError as error:
        log.warning("run notice to %s not sent (%s): %s", cfg.notify_env, error, event.get("outcome"))
        return False


def record(params: Params, outcome: str, what: str, **details) -> dict:
    """Write the run's outcome into the status record and send the notice it calls for."""
    from models.files import atomic_write

    cfg = params.runs
    event = {"outcome": outcome, "run": what, "dataset": params.data.dataset, "at": _now(), **details}
    status = read_status(cfg)
    status[STATUS_KEY[outcome]] = event
    payload = json.dumps(status, indent=1, sort_keys=True).encode()
    atomic_write(cfg.status, lambda handle: handle.write(payload))
    if outcome != "succeeded" or details.get("promoted") is False:
        notify(cfg, event)
    return event


def read_status(cfg: RunsConfig) -> dict:
    try:
        return json.loads(cfg.status.read_text())
    except (OSError, ValueError):
        return {}


def guarded(params: Params, what: str, body: Callable[[], object], gate: Callable[[object], dict | None] = lambda _: None):
    """Run ``body`` holding the run lock, recording and announcing how it ended; ``gate``
    finds the train step's summary in its result (a run that trained without promoting is
    announced too)."""
    cfg = params.runs
    try:
        with run_lock(cfg.lock, what, wait_s=cfg.queue_wait_s if cfg.on_overlap == "queue" else 0.0):
            result = body()
    except RunBusy as error:
        record(params, "skipped", what, reason=str(error))
        raise
    except BaseException as error:
        if timed_out(error):
            record(params, "timed out", what, reason=str(error) or type(error).__name__)
        else:
            record(params, "failed", what, reason=f"{type(error).__name__}: {error}"[:2000])
        raise
    train = gate(result)
    details = {"model": train["model"], "promoted": train["promoted"], "reasons": train["reasons"]} if train else {}
    record(params, "succeeded", what, **details)
    return result
