"""What the language model adds: decayed item-CF alone, + the LM score, and the LM score alone.

    DECAYREC_DATA_MIRROR=/path/to/mirror python benchmarks/ablation.py [--protocols P1 P2]

On ml-1m, each model is tuned on validation (the combined model's alpha among them, 0
included, so "+ LM" may honestly pick no LM) and measured on test, exactly as
``decayrec evaluate`` does. Item vectors are the embed stage's (MiniLM by default), built
into ``data/datasets/<dataset>/embeddings`` when missing. Segments: every user, cold users,
and recall on long-tail and on cold target items (fewer than ``cold_item_events`` users in
the fitting data), where text should matter most.

Prints one table per protocol, then one JSON line.
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

from flows.config import load_params  # noqa: E402
from flows.steps import ensure_splits, item_vectors  # noqa: E402
from models.evaluate import evaluate_protocol  # noqa: E402
from models.protocols import load_parts, tasks  # noqa: E402

HALF_LIVES = [7, 30, 90, 365]
GRIDS = {
    "itemknn_decay": {"k": [250], "half_life_days": HALF_LIVES},
    "itemknn_decay_lm": {
        "k": [250], "half_life_days": [7, 30], "lm_half_life_days": [30], "alpha": [0.0, 0.1, 0.25, 0.5, 1.0],
    },
    "lm": {"half_life_days": HALF_LIVES},
}
LABELS = {"itemknn_decay": "decayed item-CF", "itemknn_decay_lm": "+ LM score", "lm": "LM score alone"}


def row(run) -> dict:
    seg = run.segments
    return {
        "params": run.params,
        "valid_ndcg_at_10": round(run.valid, 4),
        "ndcg_at_10": round(run.test["ndcg_at_10"], 4),
        "recall_at_10": round(run.test["recall_at_10"], 4),
        "coverage_at_10": round(run.test["coverage_at_10"], 4),
        "cold_users_ndcg_at_10": round(seg["cold_users"]["ndcg"], 4),
        "cold_users": seg["cold_users"]["users"],
        "long_tail_recall_at_10": round(seg["long_tail_items"]["recall"], 4),
        "cold_item_recall_at_10": round(seg["cold_items"]["recall"], 4),
        "cold_item_users": seg["cold_items"]["users"],
        "users": run.users,
    }


def table(protocol: str, rows: dict) -> str:
    keys = ["ndcg_at_10", "recall_at_10", "coverage_at_10", "cold_users_ndcg_at_10", "long_tail_recall_at_10",
            "cold_item_recall_at_10"]
    lines = [f"{protocol} test (tuned on validation)", f"  {'model':<18}" + "".join(f"{k:>24}" for k in keys) + "  chosen"]
    for name, r in rows.items():
        lines.append(f"  {LABELS[name]:<18}" + "".join(f"{r[k]:>24.4f}" for k in keys) + f"  {r['params']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--protocols", nargs="+", default=["P1", "P2"])
    args = parser.parse_args()
    params = load_params(ROOT / "params.yaml", dataset=args.dataset)
    ensure_splits(params)
    items = pd.read_parquet(params.validation.validated_dir / "items.parquet")
    started = time.perf_counter()
    vectors = item_vectors(params)
    out: dict = {"dataset": args.dataset, "lm_model": params.lm.model, "vectors_s": round(time.perf_counter() - started, 1)}
    cfg = params.evaluate.model_copy(update={"models": GRIDS, "k": [10]})
    for protocol in args.protocols:
        started = time.perf_counter()
        runs = evaluate_protocol(tasks(protocol, load_parts(params.split.out_dir, protocol)), items, cfg, vectors)
        out[protocol] = {run.name: row(run) for run in runs}
        out[f"{protocol}_wall_s"] = round(time.perf_counter() - started, 1)
        print(table(protocol, out[protocol]), flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
