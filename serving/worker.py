"""A serving worker process's settings: its threads, and garbage collection that never
stops requests in flight.

Threads: worker processes already use every core, so torch and numpy's BLAS get
``serving.torch_threads`` and ``serving.blas_threads`` whatever the environment says. BLAS's
default, a thread per core in every worker, cut /recommend at 32 connections from ~860 to
~320 requests/s (benchmarks/serving.py without OPENBLAS_NUM_THREADS).

Memory: freed blocks stay in the process for the next request. glibc serves an allocation
above its mmap threshold (128 KB at first) with fresh pages that are unmapped again when freed,
so every temporary of a request's numpy work (one 16-user batch of ml-1m rows is 240 KB) paid
its page faults again: a ``top_k`` over such a batch took 0.47 ms fresh against 0.26 ms with
the threshold at ``serving.malloc_mmap_threshold_mb`` (and freed memory kept, not trimmed).

Garbage collection: no full collection in the middle of requests.

CPython's automatic full (generation 2) collection walks every tracked object. In a worker
that holds the loaded engine (pandas, Feast, torch, per-user histories) and, for each request
of the last ``timeout_s``, BentoML's timeout timer, one such walk stalls every request in
flight: it was the p99 of /recommend (benchmarks/serving.py: a trivial endpoint's p99 went from
over 100 ms to 12-23 ms at 32 connections without it). So the heap built at start-up is frozen
(never walked again), automatic collection keeps to the young generations, which are small and
quick, and full collections run on a timer, so cyclic garbage that outlives the young
generations is still freed.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import threading
import time

from flows.config import ServingConfig

log = logging.getLogger(__name__)

# Generation 2 collects when this many generation-1 collections have run: never, in practice.
NEVER = 2**31 - 1


def tune(cfg: ServingConfig) -> None:
    """This process's threads and allocator as ``cfg`` says (from the main thread)."""
    limit_threads(cfg)
    if not keep_freed_memory(cfg) and cfg.malloc_mmap_threshold_mb:
        log.info("allocator not tuned (not glibc): numpy temporaries get fresh pages")


def limit_threads(cfg: ServingConfig) -> None:
    """``cfg``'s thread counts for torch and BLAS in this process. Call it from the main
    thread: OpenBLAS ignores a thread count set from any other."""
    import torch
    from threadpoolctl import threadpool_limits

    from models import ann

    torch.set_num_threads(cfg.torch_threads)
    threadpool_limits(cfg.blas_threads, user_api="blas")
    ann.limit_threads(cfg.torch_threads)


# mallopt(3) parameters.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory(cfg: ServingConfig) -> bool:
    """Allocations up to ``cfg.malloc_mmap_threshold_mb`` come from the heap, and the heap
    is not trimmed under twice that; False where the C library is not glibc (nothing set)
    or the setting is 0."""
    limit = int(cfg.malloc_mmap_threshold_mb * 2**20)
    name = ctypes.util.find_library("c")
    if not limit or name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, limit)) and bool(mallopt(M_TRIM_THRESHOLD, 2 * limit))


def settle(full_every_s: float) -> FullCollections | None:
    """Freeze what is alive now and move full collections onto a timer of ``full_every_s``
    seconds (a daemon thread, returned started); ``0`` freezes only and leaves Python's
    schedule."""
    gc.collect()
    gc.freeze()
    log.info("heap: %s objects frozen", f"{gc.get_freeze_count():,}")
    if full_every_s <= 0:
        return None
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, NEVER)
    collector = FullCollections(full_every_s)
    collector.start()
    return collector


class FullCollections(threading.Thread):
    """A full collection every ``every_s`` seconds until ``halt()``."""

    def __init__(self, every_s: float) -> None:
        super().__init__(name="full-gc", daemon=True)
        self.every_s = every_s
        self._halted = threading.Event()

    def run(self) -> None:
        while not self._halted.wait(self.every_s):
            started = time.perf_counter()
            freed = gc.collect()
            log.debug("heap: full collection freed %d objects in %.1f ms", freed, (time.perf_counter() - started) * 1000)

    def halt(self) -> None:
        self._halted.set()
        self.join()
