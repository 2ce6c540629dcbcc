from __future__ import annotations

import gc
import subprocess
import sys
import time
import weakref
from pathlib import Path

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
        from models.ann import _faiss

        assert _faiss().omp_get_max_threads() == 1  # its OpenMP, not BLAS's: a thread per core by default
    finally:
        threadpool_limits(1, user_api="blas")


# Run in a fresh interpreter: the allocator's state is per process and the test's own is
# whatever earlier tests left. Sorts one 16-user batch of ml-1m-sized rows many times (a
# served batch's temporaries: 16 x 3,700 int64 positions, 470 KB).
FAULTS = """
import resource, sys
import numpy as np
from flows.config import ServingConfig
from serving.worker import keep_freed_memory
def serve(scores):  # a batch's temporaries: copies of the rows and their positions
    block = np.array(scores, copy=True)
    np.argsort(np.negative(block), axis=1, kind='stable')
tuned = keep_freed_memory(ServingConfig(malloc_mmap_threshold_mb=float(sys.argv[1])))
scores = np.random.default_rng(0).random((16, 3700), dtype=np.float32)
serve(scores)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(100):
    serve(scores)
print(tuned, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 100)
"""


def faults_per_call(threshold_mb: float) -> tuple[str, float]:
    out = subprocess.run([sys.executable, "-c", FAULTS, str(threshold_mb)], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2]).stdout.split()
    return out[0], float(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_keep_freed_memory_spares_each_request_its_page_faults() -> None:
    # glibc's default gives each 240 KB temporary fresh pages again (about 200 faults a call here).
    tuned, faults = faults_per_call(32)
    assert tuned == "True" and faults < 1
    untouched, default_faults = faults_per_call(0)
    assert untouched == "False" and default_faults > 20 * max(faults, 1)
