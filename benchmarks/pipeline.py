"""Wall time per step and peak memory of the whole pipeline (what `make run` does).

    python benchmarks/pipeline.py                       # the bundled ml-latest-small
    DECAYREC_DATA_MIRROR=/path/to/mirror python benchmarks/pipeline.py --dataset ml-1m

Peak memory is this process's maximum resident set size. The last line printed is JSON.
"""
from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flows.cli import format_summary, format_training  # noqa: E402
from flows.config import load_params  # noqa: E402
from flows.pipeline import run_all  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default=None, help="default: params.yaml's data set")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("great_expectations", "py.warnings", "feast"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    params = load_params(ROOT / "params.yaml", dataset=args.dataset)
    started = time.perf_counter()
    results, seconds = run_all(params)
    wall = round(time.perf_counter() - started, 1)
    peak_mb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    train = results["train"]
    print(format_summary(params, results["validate"], results["split"], wall))  # what `decayrec run` prints
    print(format_training(train))
    for name, s in seconds.items():
        print(f"{name:>9}: {s:8.1f} s")
    print(f"{'total':>9}: {wall:8.1f} s, peak RSS {peak_mb:,.0f} MB; {train['model']} ({train['kind']}) "
          f"{'promoted' if train['promoted'] else 'not promoted'}")
    print(json.dumps({"dataset": params.data.dataset, "wall_s": wall, "peak_rss_mb": peak_mb, "steps": seconds,
                      "model": train["model"], "kind": train["kind"], "promoted": train["promoted"],
                      "bento": results["package"]["bento"]}))


if __name__ == "__main__":
    main()
