"""The Feast store in either profile, and the reads and writes the project makes through it.

local: SQLite online store, file registry (nothing to run).
production: Redis online store, SQL registry on PostgreSQL (both on 127.0.0.1).
Both read the Parquet tables through the DuckDB offline store: the file (dask) store spends
most of a point-in-time join pickling the array columns to tokenize them (75 s against 5 s
for one ml-1m training history).
"""
from __future__ import annotations

import itertools
import logging
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from features.ids import python_ids

if TYPE_CHECKING:
    from feast import FeatureStore

    from features.feature_repo.definitions import Repository
    from flows.config import FeaturesConfig, StoreConfig

log = logging.getLogger(__name__)

USER_FEATURES = [f"user_interest:{f}" for f in ("interest", "interest_share", "events_decayed", "last_event_s", "recent_event_s")]
ITEM_FEATURES = [f"item_popularity:{f}" for f in ("popularity_short", "popularity_long", "last_event_s")]
LM_FEATURES = [f"user_lm_profile:{f}" for f in ("lm_profile", "lm_weight", "lm_last_event_s")]
# The views each step loads: the LM profiles come later, from the item vectors.
DECAY_VIEWS = ("user_interest", "item_popularity")
LM_VIEWS = ("user_lm_profile",)


def repo_settings(cfg: StoreConfig) -> dict:
    """Feast's settings for ``cfg``: what ``feature_store.yaml`` holds."""
    local = Path(cfg.local_dir).resolve()
    local.mkdir(parents=True, exist_ok=True)
    if cfg.profile == "local":
        registry = str(local / "registry.db")
        online = {"type": "sqlite", "path": str(local / "online.db")}
    else:
        # Each deployment (and each test) keeps its registry tables in its own schema.
        registry = {
            "registry_type": "sql",
            "path": f"{cfg.postgres}?options=-csearch_path%3D{cfg.postgres_schema}",
            "cache_ttl_seconds": 60,
            "sqlalchemy_config_kwargs": {"pool_pre_ping": True},
        }
        online = {"type": "redis", "connection_string": cfg.redis}
    return {"project": cfg.project, "provider": "local", "registry": registry, "online_store": online,
            "offline_store": {"type": "duckdb"}, "entity_key_serialization_version": 3}


def repo_config(cfg: StoreConfig):
    from feast.repo_config import RepoConfig

    return RepoConfig(**repo_settings(cfg), repo_path=str(Path(cfg.local_dir).resolve()))


def write_feature_store_yaml(cfg: StoreConfig) -> Path:
    """``feature_store.yaml`` for ``cfg`` in its ``local_dir``, so that Feast's own CLI reads
    the store: ``feast -c data/feast feature-views list``."""
    import yaml

    from models.files import atomic_write

    path = Path(cfg.local_dir).resolve() / "feature_store.yaml"
    atomic_write(path, lambda f: f.write(yaml.safe_dump(repo_settings(cfg), sort_keys=False).encode()))
    return path


def open_store(cfg: StoreConfig) -> FeatureStore:
    from feast import FeatureStore

    if cfg.profile == "production":
        _ensure_schema(cfg)
    return FeatureStore(config=repo_config(cfg))


def _ensure_schema(cfg: StoreConfig) -> None:
    import sqlalchemy

    engine = sqlalchemy.create_engine(cfg.postgres)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text(f'CREATE SCHEMA IF NOT EXISTS "{cfg.postgres_schema}"'))
    engine.dispose()


def drop_production(cfg: StoreConfig) -> None:
    """Remove a production project's online keys and its registry schema (tests, benchmarks)."""
    import redis
    import sqlalchemy

    address, *options = cfg.redis.split(",")
    host, port = address.rsplit(":", 1)
    db = int(dict(o.split("=", 1) for o in options).get("db", 0))
    client = redis.Redis(host=host, port=int(port), db=db)
    for key in client.scan_iter(match=f"*{cfg.project}*"):
        client.delete(key)
    engine = sqlalchemy.create_engine(cfg.postgres)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text(f'DROP SCHEMA IF EXISTS "{cfg.postgres_schema}" CASCADE'))
    engine.dispose()


def write_tables(tables: dict[str, pd.DataFrame], out_dir: Path) -> None:
    """The offline store's Parquet files, one per source (``<view>.parquet``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        table.to_parquet(out_dir / f"{name}.parquet", index=False)


def write_chunks(chunks: Iterable[pd.DataFrame], path: Path) -> int:
    """One Parquet file from a table's parts, each written as it comes (one row group per
    part), so that only one part is in memory; one part is written as ``write_tables`` would.
    Returns the rows written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = iter(chunks)
    first = next(parts)
    second = next(parts, None)
    if second is None:
        first.to_parquet(path, index=False)
        return len(first)
    table = pa.Table.from_pandas(first, preserve_index=False)
    rows = 0
    with pq.ParquetWriter(path, table.schema) as writer:
        for part in itertools.chain([first, second], parts):
            writer.write_table(pa.Table.from_pandas(part, preserve_index=False, schema=table.schema))
            rows += len(part)
    return rows


def made_with(cfg: FeaturesConfig) -> str:
    """The settings stored state depends on, as the text the views are tagged with."""
    import json

    return json.dumps({
        "user_half_life_days": cfg.user_half_life_days, "item_short_half_life_days": cfg.item_short_half_life_days,
        "item_long_half_life_days": cfg.item_long_half_life_days, "windows_days": list(cfg.windows_days),
        "event_weights": dict(cfg.event_weights), "value_mode": cfg.value_mode,
    }, sort_keys=True)


def stored_made_with(store: FeatureStore) -> str | None:
    """The settings the online rows were made with (a view's tag); None for an untagged or
    unregistered store."""
    try:
        return store.get_feature_view(DECAY_VIEWS[0]).tags.get("made_with")
    except Exception:  # noqa: BLE001 - Feast raises its own not-found errors
        return None


class StoreMismatch(RuntimeError):
    """The online store's rows were made with other decay settings than the reader's."""


def check_made_with(store: FeatureStore, cfg: FeaturesConfig) -> None:
    """Refuse a store whose rows were made with other settings than ``cfg`` (their decay
    would be read with the wrong half-lives); an untagged or unreadable one passes with a
    warning (it may be an older store, or down for now)."""
    expected, found = made_with(cfg), stored_made_with(store)
    if found is None:
        log.warning("the online store does not say what its rows were made with (or cannot be read); serving anyway")
    elif found != expected:
        raise StoreMismatch(f"the online store's rows were made with {found}, but this bundle's params are {expected}: "
                            "run `decayrec features` and `decayrec profiles` with the bundle's params (or package the "
                            "params the store was made with)")


def apply(store: FeatureStore, repo: Repository) -> list[str]:
    """Register ``repo``. A view whose rows were made with other settings (its ``made_with``
    tag) is deleted first, online rows and all, so the next materialization starts it from
    nothing: no row made with an old half-life or weight survives, even one that the
    incremental load would not reach. Returns the views deleted."""
    from feast.errors import FeatureViewNotFoundException

    stale = []
    for view in repo.views():
        try:
            old = store.get_feature_view(view.name)
        except FeatureViewNotFoundException:
            continue
        if old.tags.get("made_with") != view.tags.get("made_with"):
            stale.append(old)
    if stale:
        log.info("feature views %s were made with other settings (%s -> %s): rebuilt from nothing",
                 [v.name for v in stale], stale[0].tags.get("made_with"), repo.user_interest.tags.get("made_with"))
        store.apply([], objects_to_delete=stale, partial=False)
    store.apply(repo.objects())
    return [v.name for v in stale]


@contextmanager
def _quiet_reads():
    """ibis calls a method duckdb deprecated, once per Feast read: noise, not news. Said
    here, around the reads: importing Feast puts its own filter for DeprecationWarning ahead
    of any set before (the CLI's), and each step command then printed it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"fetch_arrow_table\(\) is deprecated", category=DeprecationWarning)
        yield


def materialize(store: FeatureStore, start: datetime, end: datetime, views: tuple[str, ...] = DECAY_VIEWS,
                window_days: float | None = None) -> None:
    """Load the latest state of ``views`` up to ``end`` into the online store.

    A view materialised before continues from where it stopped (incremental). A new one
    starts at ``start``, the data's first timestamp: Feast's own first window (now - ttl)
    would skip history that is older than the wall clock's year. With ``window_days`` a new
    view is loaded one window of time after another, oldest first, each writing the latest
    row per entity within it over the earlier ones': Feast holds a window's rows in memory at
    once (5M events' profiles in one window: 11 GB).
    """
    import contextlib
    import io

    end = end.astimezone(timezone.utc)
    for view in (store.get_feature_view(name) for name in views):
        # Feast prints each load in terminal colours to stdout: one log line says it instead.
        with contextlib.redirect_stdout(io.StringIO()), _quiet_reads():
            if view.materialization_intervals:
                store.materialize_incremental(end_date=end, feature_views=[view.name])
            else:
                for a, b in _windows(start.astimezone(timezone.utc), end, window_days):
                    store.materialize(start_date=a, end_date=b, feature_views=[view.name])
        log.info("online store: %s loaded up to %s into %s", view.name, end.isoformat(timespec="seconds"), store.project)


def _windows(start: datetime, end: datetime, days: float | None) -> list[tuple[datetime, datetime]]:
    """``[start, end]`` cut into windows of ``days`` (None: one window)."""
    if days is None:
        return [(start, end)]
    step = timedelta(days=days)
    bounds = [start]
    while bounds[-1] + step < end:
        bounds.append(bounds[-1] + step)
    return list(zip(bounds, bounds[1:] + [end]))


def online_users(store: FeatureStore, user_ids) -> pd.DataFrame:
    """Stored user state, one row per id in order; users without state have nulls."""
    rows = [{"user_id": u} for u in python_ids(user_ids)]
    return store.get_online_features(features=USER_FEATURES, entity_rows=rows).to_df()


def online_lm_profiles(store: FeatureStore, user_ids) -> pd.DataFrame:
    """Stored LM profiles, one row per id in order; users without one have nulls."""
    rows = [{"user_id": u} for u in python_ids(user_ids)]
    return store.get_online_features(features=LM_FEATURES, entity_rows=rows).to_df()


def online_items(store: FeatureStore, item_ids) -> pd.DataFrame:
    rows = [{"item_id": i} for i in python_ids(item_ids)]
    return store.get_online_features(features=ITEM_FEATURES, entity_rows=rows).to_df()


def within_ttl(last_event_s: np.ndarray, now: float) -> np.ndarray:
    """Which stored states (by their ``last_event_s``; NaN: none) a read at ``now`` may use:
    those no older than the views' TTL, Feast's point-in-time rule. The online store hands
    back a row however old, so its readers apply the rule here, as training's reads do. A
    state newer than ``now`` counts (an online row is the latest there is; its decay clips
    the age at zero)."""
    from features.feature_repo.definitions import TTL

    last = np.asarray(last_event_s, dtype=np.float64)
    return ~np.isnan(last) & (now - np.nan_to_num(last) <= TTL.total_seconds())


def historical(store: FeatureStore, entity_rows: pd.DataFrame, features: list[str]) -> pd.DataFrame:
    """Point-in-time features for every entity row, exactly one output row per input row.

    Feast's offline stores may drop an entity row whose key has rows but none inside
    [timestamp - ttl, timestamp] (the file store does); merging back onto the input keeps
    it, with nulls.
    """
    keys = [c for c in entity_rows.columns if c != "event_timestamp"]
    # The offline store keeps microseconds; a nanosecond timestamp would fail its cast.
    stamps = pd.to_datetime(entity_rows["event_timestamp"], utc=True).dt.floor("us").astype("datetime64[us, UTC]")
    request = entity_rows.reset_index(drop=True).assign(event_timestamp=stamps.to_numpy(), _row=lambda f: np.arange(len(f)))
    with _quiet_reads():
        found = store.get_historical_features(entity_df=request, features=features).to_df()
    values = found.drop(columns=keys + ["event_timestamp"]).drop_duplicates("_row")
    merged = request.merge(values, on="_row", how="left").sort_values("_row")
    return merged.drop(columns="_row").reset_index(drop=True)


def push(store: FeatureStore, source: str, rows: pd.DataFrame) -> None:
    from feast.data_source import PushMode

    store.push(source, rows, to=PushMode.ONLINE)


def build(events: pd.DataFrame, items: pd.DataFrame, cfg: FeaturesConfig, users=None) -> dict[str, pd.DataFrame]:
    """Every offline feature table from validated events and items (``users``: the user
    table of these user ids alone; None: of all)."""
    return {name: pd.concat(list(parts), ignore_index=True) for name, parts in build_chunks(events, items, cfg, users=users).items()}


def build_chunks(events: pd.DataFrame, items: pd.DataFrame, cfg: FeaturesConfig,
                 chunk_events: int | None = None, users=None) -> dict[str, Iterator[pd.DataFrame]]:
    """``build``'s tables, each in parts of whole users' (items') events, at most
    ``chunk_events`` of them (None: one part): for ``write_chunks``."""
    from features.interest import item_feature_table, user_feature_chunks

    theirs = events if users is None else events[events["user_id"].isin(users)]  # a user's rows read their events alone
    return {
        "user_interest": user_feature_chunks(theirs, items, cfg, chunk_events),
        "item_popularity": iter([item_feature_table(events, cfg)]),  # one row per item-day: small beside the users'
    }


