"""The service's own batcher (``serving.batching``) against BentoML's adaptive batching
(``@bentoml.api(batchable=True, max_batch_size, max_latency_ms)``), side by side in one run:
/recommend k=10 at 1, 8 and 32 connections with wrk, on the same bundle, the same engine and
the same number of worker processes, each service started from the repository.

    python benchmarks/batching.py [--dataset ml-latest-small] [--seconds 15]

Needs a packaged champion for the data set (`decayrec run`). Prints a table and one JSON line.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.serving import _post, recommend_script, served, wrk  # noqa: E402
from flows.config import load_params  # noqa: E402

SERVICES = {  # name: (what `bentoml serve` serves, the body of one request)
    "own batcher (serving.batching)": ("serving.service:Recommender", '{"user_id": USER, "k": K}'),
    "BentoML batchable api": ("benchmarks.bentoml_batched:BentoBatched", '{"asks": [{"user_id": USER, "k": K}]}'),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="ml-latest-small")
    parser.add_argument("--seconds", type=int, default=15, help="per load level")
    parser.add_argument("--users", type=int, default=2000, help="distinct users the load draws from")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (Debian: apt-get install wrk)")
    params = load_params(ROOT / "params.yaml", dataset=args.dataset)
    bundle = ROOT / params.serving.bundle_dir
    if not (bundle / "bundle.json").exists():
        sys.exit(f"no bundle at {bundle}: run `decayrec run --dataset {args.dataset}` first")
    events = pd.read_parquet(bundle / "events.parquet", columns=["user_id"])
    rng = np.random.default_rng(0)
    pool = events["user_id"].unique()
    users = sorted(rng.choice(pool, size=min(args.users, len(pool)), replace=False).tolist())
    folder = Path(tempfile.mkdtemp(prefix="decayrec-batching-bench-"))
    env = {"DECAYREC_BUNDLE": str(bundle)}
    results: dict[str, dict[int, dict]] = {}
    for n, (name, (target, body)) in enumerate(SERVICES.items()):
        with served(target, folder / str(n), env) as url:
            for user in users[:50]:  # every worker loaded and warm
                _post(url + "/recommend", json.loads(body.replace("USER", str(user)).replace("K", "10")))
            results[name] = {}
            for c in (1, 8, 32):
                print(f"{name}: /recommend k=10, {c} connection(s), {args.seconds} s ...", flush=True)
                results[name][c] = wrk(url, recommend_script(users, 10, body), c, args.seconds, folder / str(n))
    print(f"{'service':<34}{'conns':>6}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
    for name, by_c in results.items():
        for c, r in by_c.items():
            print(f"{name:<34}{c:>6}{r['rps']:>10.1f}{r['p50_ms']:>10.2f}{r['p99_ms']:>10.2f}{r['errors']:>8}")
    own, bento = (results[name] for name in SERVICES)
    print("own / BentoML req/s: " + ", ".join(f"c={c} {own[c]['rps'] / bento[c]['rps']:.2f}x" for c in own))
    print(json.dumps({"dataset": args.dataset, "workers": params.serving.workers, "max_batch": params.serving.max_batch,
                      **{f"{key}_c{c}_{m}": r[m] for key, by_c in zip(("own", "bentoml"), (own, bento))
                         for c, r in by_c.items() for m in ("rps", "p50_ms", "p99_ms", "errors")}}))


if __name__ == "__main__":
    main()
