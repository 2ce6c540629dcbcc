"""Learned vs fixed half-lives, and the decay kinds, inside the decayed baselines on ml-1m P1,
and decay speed.

    DECAYREC_DATA_MIRROR=/path/to/mirror python benchmarks/decay.py [--dataset ml-1m]

Quality: DecayedItemKNN (k=250) and SAR (jaccard) with fixed half-lives (7, 30, 90, 365 days)
and with ``half_life_days="learned"`` (a half-life per user fitted on the fitting data,
``features.learned_decay.fit_user_half_lives``), plus "learned-global" (the same fit with an
infinitely sure prior: one learned half-life for everyone), so that the per-user part and
the learned global part can be told apart, and "learned (per-user holdout)" (each user's
latest quarter of events as targets instead of the globally latest quarter). Validation: fit on train; test: fit on
train + validation (BENCHMARK.md, P1). "fixed (valid-best)" is the fixed half-life a
deployed system would pick on validation, measured on test: the fair opponent. The other
kinds: linear (``max(0, 1 - age / 2h)``, half weight at the same ``h``) and time windows
(7 / 30 / 90 / 365 days weighing 8:4:2:1), ``models.baselines.Decayed``.

Speed: ``decayed_sums`` over every ml-1m event (per user, and per user x genre), and the
live fold's throughput (``features.live``, the online store's update rule) in batches, in
time order and shuffled (late events).

Prints a table, then one JSON line.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from features.decay import SECONDS_PER_DAY, decayed_sums, exponential  # noqa: E402
from features.learned_decay import LearnedDecay  # noqa: E402
from features.live import _fold  # noqa: E402
from flows.config import load_params  # noqa: E402
from flows.steps import ensure_splits  # noqa: E402
from models import metrics  # noqa: E402
from models.evaluate import context, measure, rank  # noqa: E402
from models.factory import make  # noqa: E402
from models.protocols import encode, load_parts, tasks  # noqa: E402

FIXED = [7.0, 30.0, 90.0, 365.0]
LINEAR = [30.0, 90.0, 365.0]
MODELS = {"itemknn_decay": {"k": 250}, "sar": {}}
KEYS = ["ndcg_at_10", "recall_at_10", "coverage_at_10"]


def settings() -> list[tuple[str, dict[str, object]]]:
    """(label, half-life params) for every setting compared."""
    rows: list[tuple[str, dict[str, object]]] = [(f"fixed {h:g} d", {"half_life_days": h}) for h in FIXED]
    rows += [(f"linear {h:g} d", {"decay": "linear", "half_life_days": h}) for h in LINEAR]
    rows.append(("window 7/30/90/365 d", {"decay": "window"}))
    rows.append(("learned", {"half_life_days": "learned"}))
    rows.append(
        ("learned-global", {"half_life_days": "learned", "learned_decay": LearnedDecay(prior_strength=math.inf)})
    )
    rows.append(
        ("learned (per-user holdout)", {"half_life_days": "learned", "learned_decay": LearnedDecay(holdout_by="user")})
    )
    return rows


def quality(parts: dict[str, pd.DataFrame], items: pd.DataFrame, cfg) -> dict:
    """model -> setting -> phase -> metrics (and, for learned, the fitted half-lives)."""
    out: dict = {}
    per_user: dict = {}  # (model, setting, phase) -> each evaluated user's NDCG@10
    for phase, task in tasks("P1", parts).items():
        target = encode(task)
        ctx = context(target, items, cfg.segments)
        for name, base in MODELS.items():
            for label, params in settings():
                started = time.perf_counter()
                model = make(name, **base, **params).fit(target.data)
                fit_s = time.perf_counter() - started
                top, _ = rank(model, target, 10, cfg.score_batch)
                overall, _ = measure(top, target, ctx, [10], cfg.segments)
                per_user[name, label, phase] = metrics.ranking_metrics(top[:, :10], target.truth, 10)["ndcg"]
                row = {k: round(overall[k], 4) for k in KEYS}
                row.update(fit_s=round(fit_s, 2), users=len(target.rows))
                learned = getattr(model, "learned_", None)
                if learned is not None:
                    hl = getattr(model, "half_lives_")[target.rows]
                    row["global_half_life_days"] = round(learned.global_half_life_days, 2)
                    row["half_life_q10_q50_q90"] = [round(float(q), 2) for q in np.quantile(hl, [0.1, 0.5, 0.9])]
                out.setdefault(name, {}).setdefault(label, {})[phase] = row
    for name, rows in out.items():
        best = max((label for label in rows if label.startswith("fixed")), key=lambda lb: rows[lb]["valid"]["ndcg_at_10"])
        rows["fixed (valid-best)"] = {"chosen": best, **{p: rows[best][p] for p in ("valid", "test")}}
        for phase in ("valid", "test"):
            # Paired over the same users: is the learned decay's edge more than noise?
            diff = per_user[name, "learned", phase] - per_user[name, best, phase]
            half_width = 1.96 * diff.std(ddof=1) / np.sqrt(len(diff))
            rows["learned"][phase]["ndcg_diff_vs_valid_best_ci95"] = [
                round(float(diff.mean() - half_width), 4), round(float(diff.mean() + half_width), 4)
            ]
    return out


def table(results: dict) -> str:
    lines = []
    head = "".join(f"{phase + ' ' + k.replace('_at_10', '@10'):>18}" for phase in ("valid", "test") for k in KEYS)
    for name, rows in results.items():
        lines.append(f"{name} (ml-1m P1; valid: fit train, test: fit train+valid)")
        lines.append(f"  {'setting':<28}{head}")
        for label, row in rows.items():
            values = "".join(f"{row[phase][k]:>18.4f}" for phase in ("valid", "test") for k in KEYS)
            note = f"  ({row['chosen']})" if "chosen" in row else ""
            if "global_half_life_days" in row.get("test", {}):
                note = f"  h0 valid {row['valid']['global_half_life_days']} d, test {row['test']['global_half_life_days']} d"
            lines.append(f"  {label:<28}{values}{note}")
        learned, fixed = rows["learned"], rows["fixed (valid-best)"]
        for phase in ("valid", "test"):
            a, b = learned[phase]["ndcg_at_10"], fixed[phase]["ndcg_at_10"]
            low, high = learned[phase]["ndcg_diff_vs_valid_best_ci95"]
            lines.append(
                f"  {phase}: learned vs fixed (valid-best) NDCG@10 {a:.4f} vs {b:.4f} ({(a / b - 1) * 100:+.1f}%;"
                f" paired difference 95% CI [{low:+.4f}, {high:+.4f}])"
            )
    return "\n".join(lines)


def speed(events: pd.DataFrame, items: pd.DataFrame) -> dict:
    """decayed_sums over all events, and the live fold's throughput."""
    users = events["user_id"].to_numpy()
    seconds = events["timestamp"].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[us]").astype("int64") / 1e6
    at = float(seconds.max())
    out: dict = {"events": len(events)}

    started = time.perf_counter()
    decayed_sums(users, seconds, None, at, 30.0)
    out["decayed_sums_per_user_s"] = round(time.perf_counter() - started, 3)

    # Per user x genre: events exploded by their item's genres (about 2.1 rows per event).
    genres = items.set_index("item_id")["categories"]
    names = sorted({g for row in genres for g in row})
    code = {g: i for i, g in enumerate(names)}
    per_item = {int(i): [code[g] for g in row] for i, row in genres.items()}
    item_ids = events["item_id"].to_numpy()
    counts = np.array([len(per_item.get(int(i), [])) for i in item_ids])
    started = time.perf_counter()
    codes = np.fromiter((c for i in item_ids for c in per_item.get(int(i), [])), dtype=np.int64, count=counts.sum())
    explode_s = time.perf_counter() - started
    keys = np.repeat(users, counts) * len(names) + codes
    started = time.perf_counter()
    decayed_sums(keys, np.repeat(seconds, counts), None, at, 30.0)
    out["decayed_sums_per_user_genre_s"] = round(time.perf_counter() - started, 3)
    out["user_genre_rows"] = int(counts.sum())
    out["explode_genres_python_s"] = round(explode_s, 3)

    # The live path (features.live._fold): dense per-user state, folded batch by batch.
    user_ids, keys = np.unique(users, return_inverse=True)
    _, batch_scores = decayed_sums(users, seconds, None, at, 30.0)
    order = np.argsort(seconds, kind="stable")
    shuffled = np.random.default_rng(0).permutation(len(users))
    for label, perm in (("time_order", order), ("shuffled", shuffled)):
        for batch in (1_000, 10_000, 100_000):
            state, last = np.zeros((len(user_ids), 1)), np.full(len(user_ids), np.nan)
            started = time.perf_counter()
            for lo in range(0, len(perm), batch):
                idx = perm[lo : lo + batch]
                state, last = _fold(state, last, keys[idx], seconds[idx], np.ones((len(idx), 1)), 30.0)
                last = np.where(np.isinf(last), np.nan, last)
            elapsed = time.perf_counter() - started
            out[f"fold_{label}_batch_{batch}_events_per_s"] = round(len(perm) / elapsed)
        read = state[:, 0] * exponential((at - last) / SECONDS_PER_DAY, 30.0)
        out[f"fold_{label}_max_rel_err_vs_batch"] = float(np.max(np.abs(read / batch_scores - 1)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="ml-1m")
    args = parser.parse_args()
    params = load_params(ROOT / "params.yaml", dataset=args.dataset)
    ensure_splits(params)
    items = pd.read_parquet(params.validation.validated_dir / "items.parquet")
    events = pd.read_parquet(params.validation.validated_dir / "events.parquet")

    started = time.perf_counter()
    results = quality(load_parts(params.split.out_dir, "P1"), items, params.evaluate)
    quality_s = round(time.perf_counter() - started, 1)
    timings = speed(events, items)

    print(table(results))
    print(f"quality wall {quality_s} s; speed: " + ", ".join(f"{k}={v}" for k, v in timings.items()))
    print(json.dumps({"dataset": args.dataset, "protocol": "P1", "quality": results, "speed": timings, "quality_wall_s": quality_s}))


if __name__ == "__main__":
    main()
