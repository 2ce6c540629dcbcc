from __future__ import annotations

import gc
import time
import weakref

import pytest
import torch
from threadpoolctl import threadpool_info, threadpool_limits

from flows.config import ServingConfig
from serving.worker import NEVER, limit_threads, settle


class Node:
    def __init__(self) -> None:
        self.other = self  # a reference cycle: only the cyclic collector frees it


@pytest.fixture
def restored():
    """Python's own collection schedule back after the test."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def _old_garbage() -> weakref.ref:
    """A cycle that has reached the oldest generation, then become garbage."""
    keep = [Node()]
    gc.collect(1)  # survivors of generations 0 and 1 move to generation 2
    ref = weakref.ref(keep[0])
    del keep
    return ref


def test_settle_freezes_the_heap_and_leaves_full_collections_to_its_timer(restored) -> None:
    collector = settle(0.2)
    try:
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[2] == NEVER  # no automatic full collection mid-request
        ref = _old_garbage()
        for _ in range(100):
            gc.collect(1)  # what allocation triggers: young collections only
        assert ref() is not None  # the young generations never reach it
        deadline = time.monotonic() + 10
        while ref() is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ref() is None  # the timer's full collection did
    finally:
        collector.halt()
    assert not collector.is_alive()


def test_settle_zero_freezes_only(restored) -> None:
    before = gc.get_threshold()
    assert settle(0) is None
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == before


def test_limit_threads_holds_whatever_the_environment_says() -> None:
    threadpool_limits(2, user_api="blas")  # as a worker without OPENBLAS_NUM_THREADS on 2 cores
    try:
        limit_threads(ServingConfig(blas_threads=1, torch_threads=1))
        assert {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"} == {1}
        assert torch.get_num_threads() == 1
    finally:
        threadpool_limits(1, user_api="blas")
