"""A serving worker process's settings: its threads, and garbage collection that never
stops requests in flight.

Threads: worker processes already use every core, so torch and numpy's BLAS get
``serving.torch_threads`` and ``serving.blas_threads`` whatever the environment says. BLAS's
default, a thread per core in every worker, cut /recommend at 32 connections from ~860 to
~320 requests/s (benchmarks/serving.py without OPENBLAS_NUM_THREADS).

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

import gc
import logging
import threading
import time

from flows.config import ServingConfig

log = logging.getLogger(__name__)

# Generation 2 collects when this many generation-1 collections have run: never, in practice.
NEVER = 2**31 - 1


def limit_threads(cfg: ServingConfig) -> None:
    """``cfg``'s thread counts for torch and BLAS in this process. Call it from the main
    thread: OpenBLAS ignores a thread count set from any other."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(cfg.torch_threads)
    threadpool_limits(cfg.blas_threads, user_api="blas")


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
