"""The whole pipeline in order, run in this process (``decayrec run``, benchmarks/pipeline.py).

The Prefect flow (``flows/retrain.py``) and the DVC stages run the same step functions.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable

from flows import steps
from flows.config import Params

log = logging.getLogger(__name__)

STEPS: list[tuple[str, Callable[[Params], dict]]] = [
    ("ingest", steps.ingest_step),
    ("validate", steps.validate_step),
    ("split", steps.split_step),
    ("features", steps.features_step),
    ("embed", steps.embed_step),
    ("profiles", steps.profiles_step),
    ("train", steps.train_step),
    ("package", steps.package_step),
]


def run_all(params: Params, names: list[str] | None = None) -> tuple[dict[str, dict], dict[str, float]]:
    """Run the steps (all, or ``names``) in order; returns each one's summary and seconds."""
    results, seconds = {}, {}
    chosen = [(n, f) for n, f in STEPS if names is None or n in names]
    for i, (name, step) in enumerate(chosen, 1):
        log.info("[%d/%d] %s", i, len(chosen), name)
        started = time.perf_counter()
        results[name] = step(params)
        seconds[name] = round(time.perf_counter() - started, 2)
        log.info("[%d/%d] %s done in %.1f s", i, len(chosen), name, seconds[name])
    return results, seconds
