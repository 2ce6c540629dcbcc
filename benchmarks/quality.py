"""Every baseline on ml-1m under P1, P2 and P0, tuned on validation; the RecBole cross-check;
and the champion (``decayrec train``) on the protocol it was trained for, measured afresh.

    DECAYREC_DATA_MIRROR=/path/to/mirror python benchmarks/quality.py [--protocols P1 P2 P0]

Prints each protocol's test table and its wall time (tuning, refits and scoring included),
writes the report to reports/datasets/<dataset>/evaluation/, and ends with one JSON line.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from flows.cli import format_table  # noqa: E402
from flows.config import load_params  # noqa: E402
from flows.steps import ensure_splits, item_vectors  # noqa: E402
from models.champion import measure_champion  # noqa: E402
from models.evaluate import ModelRun, context, evaluate_protocol, measure, rank  # noqa: E402
from models.factory import make  # noqa: E402
from models.protocols import encode, load_parts, tasks  # noqa: E402
from models.registry import Registry  # noqa: E402
from models.report import write_report  # noqa: E402

# RecBole's published ml-1m general-protocol figures (BENCHMARK.md), at their settings.
RECBOLE = {
    "itemknn": ({"k": 250}, {"recall_at_10": 0.1723, "ndcg_at_10": 0.2389}),
    "ease": ({"reg": 1000.0}, {"recall_at_10": 0.2139, "ndcg_at_10": 0.2865, "precision_at_10": 0.2082}),
}
KEYS = ["ndcg_at_10", "recall_at_10", "precision_at_10", "hit_at_10", "coverage_at_10", "ild_at_10"]


def cross_check(parts: dict[str, pd.DataFrame], items: pd.DataFrame, cfg) -> dict:
    """Our P0 figures at RecBole's own settings, and their ratio to the published ones."""
    target = encode(tasks("P0", parts)["test"])
    ctx = context(target, items, cfg.segments)
    out = {}
    for name, (params, published) in RECBOLE.items():
        top, _ = rank(make(name, **params).fit(target.data), target, 10, cfg.score_batch)
        ours, _ = measure(top, target, ctx, [10], cfg.segments)
        out[name] = {
            "params": params,
            **{m: {"ours": round(ours[m], 4), "recbole": v, "ratio": round(ours[m] / v, 4)} for m, v in published.items()},
        }
    return out


def champion_run(params, protocol: str, parts: dict[str, pd.DataFrame], items: pd.DataFrame) -> ModelRun | None:
    """The registered champion measured on this protocol's test split, when it was trained
    for this protocol on this data set."""
    registry = Registry(params.train.registry_dir)
    tag = registry.champion()
    if tag is None or registry.info(tag)["labels"].get("protocol") != protocol:
        return None
    task = tasks(protocol, parts)["test"]
    started = time.perf_counter()
    overall, segments = measure_champion(registry, tag, task, items, item_vectors(params), params)
    kind = registry.info(tag)["labels"].get("kind", "scorer")
    users = segments["all"]["users"]
    return ModelRun("champion", {"tag": tag, "kind": kind}, float("nan"), overall, segments, 0.0,
                    round(time.perf_counter() - started, 3), users)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--protocols", nargs="+", default=["P1", "P2", "P0"])
    args = parser.parse_args()

    params = load_params(ROOT / "params.yaml", dataset=args.dataset)
    cfg = params.evaluate
    ensure_splits(params)
    items = pd.read_parquet(params.validation.validated_dir / "items.parquet")
    results, seconds, check = {}, {}, None
    for protocol in args.protocols:
        parts = load_parts(params.split.out_dir, protocol)
        started = time.perf_counter()
        results[protocol] = evaluate_protocol(tasks(protocol, parts), items, cfg)
        seconds[protocol] = round(time.perf_counter() - started, 1)
        if protocol == "P0":
            check = cross_check(parts, items, cfg)
        champion = champion_run(params, protocol, parts, items)
        if champion is not None:
            results[protocol].append(champion)
    metrics = write_report(results, args.dataset, cfg.out_dir, 10)

    print(format_table(metrics, 10))
    if not any(run.name == "champion" for runs in results.values() for run in runs):
        print(f"no champion in {params.train.registry_dir} for these protocols: run `decayrec train --dataset {args.dataset}`")
    for protocol, runs in results.items():
        timing = ", ".join(f"{r.name} fit {r.fit_s:.2f}s predict {r.predict_s:.2f}s" for r in runs)
        print(f"{protocol}: all baselines, tuning included, {seconds[protocol]} s ({timing})")
    if check:
        print("RecBole cross-check (P0, test, @10): " + json.dumps(check))
    print(f"report: {cfg.out_dir / 'report.md'}")

    summary: dict = {
        protocol: {
            run.name: {
                **{key: round(run.test[key], 4) for key in KEYS},
                "fit_s": run.fit_s,
                "predict_s": run.predict_s,
                "users": run.users,
                "params": run.params,
            }
            for run in runs
        }
        for protocol, runs in results.items()
    }
    summary["wall_s"] = seconds
    if check:
        summary["recbole_cross_check"] = check
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
