"""Adaptive batching: what waits together runs together, a lone item runs at once, and an
error reaches only the callers it belongs to."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from serving.batching import Batcher


def test_items_waiting_behind_a_batch_run_together_in_the_next_one() -> None:
    gate, batches = threading.Event(), []

    def run(items: list[int]) -> list[int]:
        batches.append(list(items))
        if len(batches) == 1:
            gate.wait(10)  # hold the first batch while the others queue up
        return [i * 10 for i in items]

    batcher = Batcher(run, max_batch=8)
    first = batcher.submit(0)
    while not batches:
        time.sleep(0.001)
    waiting = [batcher.submit(i) for i in range(1, 11)]
    gate.set()
    assert first.result(10) == 0 and [f.result(10) for f in waiting] == [i * 10 for i in range(1, 11)]
    assert batches == [[0], list(range(1, 9)), [9, 10]]  # max_batch caps a batch
    assert (batcher.batches, batcher.items) == (3, 11)


def test_a_lone_item_runs_at_once_and_concurrent_callers_get_their_own_results() -> None:
    batcher = Batcher(lambda items: [(i, len(items)) for i in items], max_batch=4)
    assert batcher(7, timeout=5) == (7, 1)
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda i: batcher(i, timeout=10), range(200)))
    assert [r[0] for r in results] == list(range(200))
    assert all(1 <= r[1] <= 4 for r in results)


def test_an_error_result_is_raised_to_its_caller_alone() -> None:
    batcher = Batcher(lambda items: [ValueError(f"bad {i}") if i < 0 else i for i in items], max_batch=4)
    good, bad = batcher.submit(1), batcher.submit(-1)
    assert good.result(5) == 1
    with pytest.raises(ValueError, match="bad -1"):
        bad.result(5)


def test_a_failing_batch_fails_its_callers_and_the_batcher_goes_on() -> None:
    calls = []

    def run(items: list[int]) -> list[int]:
        calls.append(items)
        if len(calls) == 1:
            raise RuntimeError("scoring failed")
        return items

    batcher = Batcher(run, max_batch=4)
    with pytest.raises(RuntimeError, match="scoring failed"):
        batcher(1, timeout=5)
    assert batcher(2, timeout=5) == 2


def test_max_batch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        Batcher(lambda items: items, max_batch=0)
