"""Decayed features on ml-1m: compute, materialize (SQLite and Redis), online reads, live updates.

    DECAYREC_DATA_MIRROR=/path/to/mirror python benchmarks/features.py

The Redis run uses db 5 and a PostgreSQL schema of its own, both removed afterwards.
The last line printed is JSON.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from features.feature_repo.definitions import repository  # noqa: E402
from features.live import update_items, update_users  # noqa: E402
from features.store import apply, build, drop_production, materialize, online_users, open_store, write_tables  # noqa: E402
from flows.config import StoreConfig, load_params  # noqa: E402
from flows.steps import ensure_splits  # noqa: E402

READS = 300


def percentiles(samples: list[float]) -> tuple[float, float]:
    ms = np.array(samples) * 1000
    return round(float(np.percentile(ms, 50)), 2), round(float(np.percentile(ms, 99)), 2)


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    params = load_params(ROOT / "params.yaml", dataset="ml-1m")
    ensure_splits(params)
    events = pd.read_parquet(params.validation.validated_dir / "events.parquet")
    items = pd.read_parquet(params.validation.validated_dir / "items.parquet")
    cfg = params.features
    out: dict = {"events": len(events)}

    started = time.perf_counter()
    tables = build(events, items, cfg)
    out["compute_s"] = round(time.perf_counter() - started, 2)
    out["user_rows"], out["item_rows"] = len(tables["user_interest"]), len(tables["item_popularity"])

    # Hold back the last 10,000 events: they arrive live after materialization.
    events = events.sort_values("timestamp", kind="stable").reset_index(drop=True)
    past, live = events.iloc[:-10_000], events.iloc[-10_000:]
    tables = build(past, items, cfg)
    users = np.sort(past["user_id"].unique())
    start = past["timestamp"].min().to_pydatetime()
    end = past["timestamp"].max().to_pydatetime() + timedelta(seconds=1)
    rng = np.random.default_rng(0)

    with tempfile.TemporaryDirectory() as tmp:
        write_tables(tables, Path(tmp) / "features")
        name = f"bench{uuid.uuid4().hex[:8]}"
        profiles = {
            "sqlite": StoreConfig(profile="local", project=name, local_dir=Path(tmp) / "feast"),
            "redis": StoreConfig(profile="production", project=name, local_dir=Path(tmp) / "feast_redis",
                                 redis="127.0.0.1:6379,db=5", postgres_schema=name),
        }
        try:
            for label, store_cfg in profiles.items():
                store = open_store(store_cfg)
                apply(store, repository(Path(tmp) / "features", Path(tmp) / "profiles"))
                # Users first (the 6,040-user figure), then the item view.
                out[f"materialize_{label}_s"] = round(timed(
                    lambda: store.materialize(start_date=start, end_date=end, feature_views=["user_interest"])), 2)
                out[f"materialize_items_{label}_s"] = round(timed(lambda: materialize(store, start, end)), 2)
                for batch in (1, 100):
                    samples = []
                    for _ in range(READS):
                        ids = rng.choice(users, size=batch, replace=False)
                        samples.append(timed(lambda: online_users(store, ids)))
                    p50, p99 = percentiles(samples)
                    suffix = "" if batch == 1 else "_100"
                    out[f"online_p50_ms_{label}{suffix}"], out[f"online_p99_ms_{label}{suffix}"] = p50, p99
                seconds = timed(lambda: (update_users(store, live, items, cfg), update_items(store, live, cfg)))
                out[f"live_update_events_per_s_{label}"] = round(len(live) / seconds)
                one = live.iloc[[-1]].assign(timestamp=live["timestamp"].iloc[-1] + pd.Timedelta(minutes=5))
                samples = []
                for i in range(50):
                    event = one.assign(timestamp=one["timestamp"] + pd.Timedelta(seconds=i))
                    samples.append(timed(lambda: (update_users(store, event, items, cfg),
                                                  online_users(store, event["user_id"]))))
                out[f"single_event_to_readable_p50_ms_{label}"], out[f"single_event_to_readable_p99_ms_{label}"] = percentiles(samples)
        finally:
            drop_production(profiles["redis"])
    out["live_update_events_per_s"] = min(out["live_update_events_per_s_sqlite"], out["live_update_events_per_s_redis"])

    print(f"compute 1M events: {out['compute_s']} s")
    for label in ("sqlite", "redis"):
        print(
            f"{label:>6}: materialize users {out[f'materialize_{label}_s']} s, items {out[f'materialize_items_{label}_s']} s; "
            f"online 1 user p50/p99 {out[f'online_p50_ms_{label}']}/{out[f'online_p99_ms_{label}']} ms, "
            f"100 users {out[f'online_p50_ms_{label}_100']}/{out[f'online_p99_ms_{label}_100']} ms; "
            f"live {out[f'live_update_events_per_s_{label}']} events/s; one event to readable "
            f"p50/p99 {out[f'single_event_to_readable_p50_ms_{label}']}/{out[f'single_event_to_readable_p99_ms_{label}']} ms"
        )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
