"""Wall time and peak memory of ingest + validate + split (P0, P1, P2) on one data set.

    DECAYREC_DATA_MIRROR=/path/to/mirror python benchmarks/ingest.py [--dataset ml-1m]

Outputs go to a temporary folder. The last line printed is JSON.
"""
from __future__ import annotations

import time

PROCESS_START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flows.config import load_params  # noqa: E402
from flows.steps import ingest_step, split_step, validate_step  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="ml-1m")
    args = parser.parse_args()

    params = load_params(ROOT / "params.yaml", dataset=args.dataset)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        params = params.model_copy(
            update={
                "data": params.data.model_copy(update={"bundled_dir": ROOT / "data" / "raw", "interim_dir": out / "interim"}),
                "validate_": params.validation.model_copy(update={"validated_dir": out / "validated", "docs_dir": out / "docs"}),
                "split": params.split.model_copy(update={"out_dir": out / "splits"}),
            }
        )
        seconds = {}
        started = time.perf_counter()
        for name, step in (("ingest", ingest_step), ("validate", validate_step), ("split", split_step)):
            t0 = time.perf_counter()
            result = step(params)
            seconds[name] = round(time.perf_counter() - t0, 2)
            if name == "validate":
                validated = result
        wall = time.perf_counter() - started

    for name, value in seconds.items():
        print(f"{name:>9}: {value:6.2f} s")
    print(f"{'total':>9}: {wall:6.2f} s   peak RSS {peak_rss_mb():.0f} MB")
    print(
        json.dumps(
            {
                "dataset": args.dataset,
                "events": validated["events"],
                "users": validated["users"],
                "items": validated["items"],
                "items_with_events": validated["items_with_events"],
                "ingest_s": seconds["ingest"],
                "validate_s": seconds["validate"],
                "split_s": seconds["split"],
                "wall_s": round(wall, 2),
                "process_s": round(time.perf_counter() - PROCESS_START, 2),
                "peak_rss_mb": round(peak_rss_mb(), 1),
            }
        )
    )


if __name__ == "__main__":
    main()
