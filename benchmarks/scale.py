"""Cost against size: every step of the pipeline, then the service, on a generated shop.

    python benchmarks/scale.py [--size S|M|L] [--scratch DIR] [--seconds 15]

Sizes (events / items / users): S 1M / 20k / 50k (default), M 5M / 100k / 250k, L 20M / 200k
/ 1M. The shop generator (``features/shop.py``) writes the export (``events.csv``,
``products.csv``) into a scratch folder, never into the repository, and the pipeline takes it
as a shop's own files (``data.dataset: csv``, the shop profile's settings otherwise). Each
step runs as its own ``decayrec`` process, so its wall time and peak resident memory are its
own (``os.wait4``). Item vectors go to the repository's embedding cache: the first ``embed``
of a size is reported apart, and ``retrain_s`` is validate -> package with the vectors cached
(``embed`` run again). Then /recommend is loaded with wrk at 1 and 32 connections, beside the
in-process time per request (``benchmarks/serving.py``).

Each size's figures are kept in ``reports/benchmarks/scale_<size>.json``; the plot
(``reports/benchmarks/scale.png``) sets time and memory per step against events and items
on log-log axes, with the fitted exponent per step once two sizes are measured. The last
line printed is one JSON object.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flows.config import ShopSettings, _read  # noqa: E402
from flows.pipeline import STEPS  # noqa: E402

SIZES = {"S": (1_000_000, 20_000, 50_000), "M": (5_000_000, 100_000, 250_000), "L": (20_000_000, 200_000, 1_000_000)}
# The shop generator's events per session at its defaults (views, a cart, a purchase, rebuys):
# measured on the bundled shop, 67,186 events from 2,000 customers' ~9 sessions each.
EVENTS_PER_SESSION = 67_186 / (2_000 * 9.0)
RUN_STEPS = [step.name for step in STEPS if step.in_run]
# What keeps each size in time on 2 cores, over the shop profile's settings: one protocol
# (P2, each customer's last event), a short search on a sample of 10,000 customers
# (train.search_max_users) and the refit on a larger one (train.max_users, evaluate.max_users
# for the baselines), the smaller baseline grid, Feast's online load a month of rows at a
# time, and time budgets for the search and the sequence model, whose softmax is over 1,024
# sampled items (the whole catalogue's cost minutes an epoch past 20k items) and which stops at
# the batch that crosses its budget. Past S the sequence model is off: at M its 240 s (part of
# one epoch over 247,383 customers) reached test NDCG@10 0.101 against the scorer's 0.372, for
# 400 s of training's time with its two rankings of the catalogue. Reported with the figures.
BASELINES = {"pop": {}, "pop_decay": {"decay": ["exponential"], "half_life_days": [30]},
             "itemknn_decay": {"k": [250], "decay": ["exponential"], "half_life_days": [30]},
             "ease": {"reg": [1000], "max_items": [4000]}, "own_items": {"decay": ["exponential"], "half_life_days": [30]}}
BUDGETS = {
    size: {"split.protocols": ["P2"], "evaluate.protocols": ["P2"], "train.protocols": ["P2"], "train.trials": 2,
           "train.search_max_users": 10_000, "train.max_users": users, "evaluate.max_users": users, "evaluate.models": BASELINES,
           "features.materialize_window_days": 30, "train.timeout_s": search_s,
           "train.sequence.negatives": 1024, "train.sequence.timeout_s": sequence_s, "train.sequence.enabled": size == "S"}
    for size, users, search_s, sequence_s in (("S", 50_000, 600, 300), ("M", 30_000, 600, 240), ("L", 30_000, 900, 240))
}
REPORTS = ROOT / "reports" / "benchmarks"


def shop_settings(size: str) -> ShopSettings:
    events, items, users = SIZES[size]
    return ShopSettings(customers=users, products=items, sessions_per_customer=events / users / EVENTS_PER_SESSION)


def scratch_params(scratch: Path, files: dict[str, Path], size: str) -> Path:
    """The shop profile's settings, taking the generated files as a user's own, every output
    under ``scratch`` (the embedding cache excepted: it is shared, keyed by model and text)."""
    from features.shop import TABULAR

    raw, _ = _read(ROOT / "params.shop.yaml")
    out = scratch / "out"
    raw["data"].update(dataset="csv", interim_dir=str(out / "interim"))
    raw["data"]["tabular"] = {**raw["data"].get("tabular", {}), **TABULAR, "events": str(files["events"]), "items": str(files["items"])}
    raw["validate"].update(validated_dir=str(out / "validated"), docs_dir=str(out / "docs"),
                           checks_docs_dir=str(out / "checks-docs"))
    raw["split"]["out_dir"] = str(out / "splits")
    raw["features"].update(out_dir=str(out / "features"), profiles_dir=str(out / "profiles"))
    raw["features"]["store"] = {**raw["features"].get("store", {}), "local_dir": str(out / "feast"), "project": f"scale_{size.lower()}"}
    raw["lm"].update(out=str(out / "embeddings" / "items.npz"), progress=False)
    raw["evaluate"]["out_dir"] = str(out / "evaluation")
    raw["train"].update(out_dir=str(out / "training"), registry_dir=str(out / "registry"))
    raw["serving"].update(bundle_dir=str(out / "serving"), events_log=str(out / "live" / "events.jsonl"),
                          bento_name=f"decayrec-scale-{size.lower()}")
    raw["runs"].update(lock=str(out / "run.lock"), status=str(out / "runs" / "status.json"))
    for dotted, value in BUDGETS[size].items():
        *parents, key = dotted.split(".")
        node = raw
        for name in parents:
            node = node.setdefault(name, {})
        node[key] = value
    import yaml

    path = scratch / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


# Linux starts a forked child's peak RSS at its parent's resident size, and exec keeps it:
# steps forked from this process (which holds the generated shop) all read at least its
# size. They are forked from this small launcher instead, started before the shop is generated.
LAUNCHER = """
import json, os, sys
for line in sys.stdin:
    args, log, cwd = json.loads(line)
    pid = os.fork()
    if pid == 0:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1); os.dup2(fd, 2); os.chdir(cwd)
        os.execv(args[0], args)
    _, status, usage = os.wait4(pid, 0)
    print(json.dumps([os.waitstatus_to_exitcode(status), usage.ru_maxrss]), flush=True)
"""


class Launcher:
    """Runs commands one at a time from a small process; each one's own peak RSS (wait4)."""

    def __init__(self) -> None:
        self._process = subprocess.Popen([sys.executable, "-c", LAUNCHER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def run(self, args: list[str], log: Path) -> tuple[int, float]:
        """``(exit code, peak RSS in MB)`` of ``args``, run from the repository root, output to ``log``."""
        self._process.stdin.write(json.dumps([args, str(log), str(ROOT)]) + "\n")
        self._process.stdin.flush()
        code, max_rss_kb = json.loads(self._process.stdout.readline())
        return code, max_rss_kb / 1024

    def close(self) -> None:
        self._process.stdin.close()
        self._process.wait()


def run_step(launcher: Launcher, params: Path, step: str, log: Path) -> dict:
    """One ``decayrec <step>`` process: its wall time and its own peak RSS."""
    started = time.perf_counter()
    code, peak_mb = launcher.run([str(Path(sys.executable).parent / "decayrec"), "--params", str(params), step], log)
    seconds = time.perf_counter() - started
    if code != 0:
        raise RuntimeError(f"{step} failed (exit {code}): {log.read_text()[-3000:]}")
    return {"time_s": round(seconds, 1), "peak_rss_mb": round(peak_mb, 1)}


def serving_figures(params_path: Path, seconds: int) -> dict:
    """wrk at 1 and 32 connections against the bento the package step built, and the
    in-process time per request (``benchmarks/serving.py``'s own functions)."""
    import pandas as pd

    from flows.config import load_params

    spec = importlib.util.spec_from_file_location("serving_benchmark", ROOT / "benchmarks" / "serving.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    params = load_params(params_path)
    events = pd.read_parquet(params.serving.bundle_dir / "events.parquet", columns=["user_id"])
    rng = np.random.default_rng(0)
    users = sorted(rng.choice(events["user_id"].unique(), size=min(2000, events["user_id"].nunique()), replace=False).tolist())
    floor = bench.inprocess(params, users, 300)
    folder = params_path.parent / "serve"
    shutil.rmtree(folder, ignore_errors=True)
    with bench.served(f"{params.serving.bento_name}:latest", folder, {}) as url:
        for user in users[:50]:  # every worker loaded and warm
            bench._post(url + "/recommend", {"user_id": user, "k": 10})
        loads = {c: bench.wrk(url, bench.recommend_script(users, 10), c, seconds, folder) for c in (1, 32)}
    return {"serving_rps_c1": loads[1]["rps"], "serving_p50_ms_c1": loads[1]["p50_ms"], "serving_p99_ms_c1": loads[1]["p99_ms"],
            "serving_rps_c32": loads[32]["rps"], "serving_p50_ms_c32": loads[32]["p50_ms"],
            "serving_p99_ms_c32": loads[32]["p99_ms"], "serving_errors": loads[1]["errors"] + loads[32]["errors"],
            "in_process_ms_per_request": floor["p50_ms"], "in_process_p99_ms": floor["p99_ms"],
            f"in_process_batch{bench.BATCH}_ms_per_request": floor[f"batch{bench.BATCH}_per_request_ms"]}


def ann_figures(params, queries: int = 1000) -> dict:
    """Recall@100 of the service's vector index against exact search (ann-benchmarks'
    count: ties with the 100th best are found), queried with a sample of the items' own
    vectors and of users' LM profiles; and the index's build time."""
    import pandas as pd

    from models.ann import VectorIndex, recall
    from models.lm_score import normalise

    stored = np.load(params.lm.out, allow_pickle=True)
    vectors = normalise(stored["vectors"].astype(np.float32))
    started = time.perf_counter()
    approximate = VectorIndex.build(vectors, params.train.candidates.ann)
    build_s = time.perf_counter() - started
    exact = VectorIndex.build(vectors, params.train.candidates.ann, exact=True)
    rng = np.random.default_rng(0)
    profiles = pd.read_parquet(params.features.profiles_dir / "user_lm_profile.parquet", columns=["lm_profile"])
    profiles = profiles.iloc[rng.choice(len(profiles), min(queries, len(profiles)), replace=False)]
    from features.lm_profile import unit_profiles

    out = {"ann_index": "exact" if approximate.exact else "hnsw", "ann_build_s": round(build_s, 1)}
    for name, q in (("items", vectors[rng.choice(len(vectors), min(queries, len(vectors)), replace=False)]),
                    ("profiles", unit_profiles(profiles, vectors.shape[1]))):
        started = time.perf_counter()
        scores, _ = approximate.search(q, 100)
        out[f"ann_ms_per_query_{name}"] = round((time.perf_counter() - started) * 1000 / len(q), 3)
        out[f"ann_recall_at_100_{name}"] = round(recall(scores, exact.search(q, 100)[0]), 4)
    out["ann_recall_at_100"] = min(out["ann_recall_at_100_items"], out["ann_recall_at_100_profiles"])
    return out


def exponents(results: list[dict], x: str, y: str) -> dict[str, float | None]:
    """Per step, the slope of log(y) against log(x) over the measured sizes (None with one)."""
    out = {}
    for step in RUN_STEPS:
        points = [(r[x], r["steps"][step][y]) for r in results if step in r["steps"] and r["steps"][step][y] > 0]
        out[step] = round(float(np.polyfit(np.log([p[0] for p in points]), np.log([p[1] for p in points]), 1)[0]), 2) \
            if len({p[0] for p in points}) >= 2 else None
    return out


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    for row, (y, label) in enumerate((("time_s", "wall time (s)"), ("peak_rss_mb", "peak RSS (MB)"))):
        for col, x in enumerate(("events", "items")):
            ax = axes[row][col]
            slopes = exponents(results, x, y)
            for step in RUN_STEPS:
                points = sorted((r[x], r["steps"][step][y]) for r in results if step in r["steps"])
                slope = "" if slopes[step] is None else f" (slope {slopes[step]})"
                ax.plot([p[0] for p in points], [p[1] for p in points], "o-", label=step + slope)
            ax.set(xscale="log", yscale="log", xlabel=x, ylabel=label, title=f"{label} against {x}")
            ax.legend(fontsize=7)
    fig.suptitle("decayrec per step against size: " + ", ".join(f"{r['size']} ({r['events']:,} events)" for r in results))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", choices=list(SIZES), default="S")
    parser.add_argument("--scratch", type=Path, default=None, help="default: a folder of its own under the system's temp dir")
    parser.add_argument("--seconds", type=int, default=15, help="per serving load level")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (Debian: apt-get install wrk; make install does it where apt-get can)")
    launcher = Launcher()  # first, while this process is small
    from features.shop import write

    scratch = args.scratch or Path(os.environ.get("TMPDIR", "/tmp")) / f"decayrec-scale-{args.size.lower()}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    settings = shop_settings(args.size)
    print(f"{args.size}: generating a shop of {settings.customers:,} customers and {settings.products:,} products "
          f"into {scratch} ...", flush=True)
    started = time.perf_counter()
    files = write(scratch / "export", settings)
    generate_s = round(time.perf_counter() - started, 1)
    params = scratch_params(scratch, files, args.size)
    steps = {}
    for step in RUN_STEPS:
        print(f"  {step} ...", flush=True)
        steps[step] = run_step(launcher, params, step, scratch / f"{step}.log")
        print(f"  {step}: {steps[step]['time_s']:,.1f} s, peak RSS {steps[step]['peak_rss_mb']:,.0f} MB", flush=True)
    cached = run_step(launcher, params, "embed", scratch / "embed-cached.log")  # the vectors now come from the cache
    launcher.close()
    retrain_s = round(sum(s["time_s"] for name, s in steps.items() if name not in ("ingest", "embed")) + cached["time_s"], 1)

    import pandas as pd

    from flows.config import load_params

    loaded = load_params(params)
    validated = pd.read_parquet(loaded.validation.validated_dir / "events.parquet", columns=["user_id", "item_id"])
    print("  serving ...", flush=True)
    served = serving_figures(params, args.seconds)
    result = {
        "size": args.size, "events": int(len(validated)), "items": int(pd.read_parquet(loaded.validation.validated_dir / "items.parquet",
                                                                                          columns=["item_id"]).shape[0]),
        "users": int(validated["user_id"].nunique()), "generate_s": generate_s, "steps": steps,
        "embed_first_s": steps["embed"]["time_s"], "embed_cached_s": cached["time_s"], "retrain_s": retrain_s,
        "peak_rss_mb": max(s["peak_rss_mb"] for s in steps.values()), "budgets": BUDGETS[args.size], **served,
        **ann_figures(loaded),
    }
    REPORTS.mkdir(parents=True, exist_ok=True)
    (REPORTS / f"scale_{args.size}.json").write_text(json.dumps(result, indent=1) + "\n")
    measured = [json.loads((REPORTS / f"scale_{s}.json").read_text()) for s in SIZES if (REPORTS / f"scale_{s}.json").exists()]
    plot(measured, REPORTS / "scale.png")
    time_slopes = exponents(measured, "events", "time_s")
    print(f"\n{args.size}: {result['events']:,} events, {result['items']:,} items, {result['users']:,} users "
          f"(generated in {generate_s} s)")
    print(f"{'step':<10}{'time s':>10}{'peak RSS MB':>14}{'time ~ events^':>16}")
    for name, s in steps.items():
        slope = time_slopes[name]
        print(f"{name:<10}{s['time_s']:>10,.1f}{s['peak_rss_mb']:>14,.0f}{'-' if slope is None else slope:>16}")
    print(f"retrain (validate -> package, vectors cached): {retrain_s:,.1f} s; peak RSS {result['peak_rss_mb']:,.0f} MB")
    print(f"serving: c=1 {served['serving_rps_c1']} req/s p99 {served['serving_p99_ms_c1']} ms; c=32 {served['serving_rps_c32']} "
          f"req/s p99 {served['serving_p99_ms_c32']} ms; {served['serving_errors']} errors; in-process "
          f"{served['in_process_ms_per_request']} ms per request (p50)")
    print(f"vector index ({result['ann_index']}, built in {result['ann_build_s']} s): recall@100 against exact "
          f"{result['ann_recall_at_100_items']} (item queries), {result['ann_recall_at_100_profiles']} (user profiles)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
