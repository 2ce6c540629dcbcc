"""Versions of the online store, on real SQLite and on real Redis + PostgreSQL: loaded
beside the served one, switched to by name, dropped when nothing names them."""
from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

import features.store
from features.lm_profile import lm_profile_table
from features.online import drop, load, published, version, versions
from features.store import build, online_lm_profiles, online_users, open_store, write_tables
from features.synthetic import SyntheticConfig, make_drift_dataset
from flows.config import FeaturesConfig, StoreConfig


@pytest.fixture(scope="module")
def drift():
    return make_drift_dataset(SyntheticConfig(n_users=30, n_items=40, events_per_user=20, seed=9))


@pytest.fixture
def cfg(store_cfg):
    return store_cfg


def tables(cfg: FeaturesConfig, events: pd.DataFrame, items: pd.DataFrame) -> tuple:
    """The features and profiles steps' tables for ``events``; the load window."""
    write_tables(build(events, items, cfg), cfg.out_dir)
    rng = np.random.default_rng(0)
    item_ids = np.sort(items["item_id"].to_numpy())
    vectors = rng.normal(size=(len(item_ids), 8)).astype(np.float32)
    write_tables({"user_lm_profile": lm_profile_table(events, item_ids, vectors, cfg)}, cfg.profiles_dir)
    return events["timestamp"].min().to_pydatetime(), events["timestamp"].max().to_pydatetime() + timedelta(seconds=1)


def events_decayed(store_cfg: StoreConfig, users) -> list:
    return online_users(open_store(store_cfg), users)["events_decayed"].astype(float).tolist()


def test_the_same_tables_make_the_same_version_which_loads_once(cfg, drift, monkeypatch):
    window = tables(cfg, drift.events, drift.items)
    first = load(cfg, *window)
    assert first.project.startswith(cfg.store.project + "_") and published(cfg) == first
    users = sorted(int(u) for u in drift.events["user_id"].unique())
    assert not any(np.isnan(events_decayed(first, users)))
    assert online_lm_profiles(open_store(first), users)["lm_profile"].notna().all()

    loads = []
    monkeypatch.setattr("features.store.materialize", lambda *a, **k: loads.append(a))
    assert load(cfg, *window) == first and loads == []  # nothing left to load
    assert version(cfg.model_copy(update={"user_half_life_days": 14.0})).project != first.project


def test_new_tables_load_beside_the_served_version_which_keeps_its_rows(cfg, drift):
    users = sorted(int(u) for u in drift.events["user_id"].unique())
    old = load(cfg, *tables(cfg, drift.events, drift.items))
    served = events_decayed(old, users)
    gone = users[0]
    fewer = drift.events[drift.events["user_id"] != gone]
    new = load(cfg, *tables(cfg, fewer, drift.items))
    assert new.project != old.project and published(cfg) == new
    assert events_decayed(old, users) == served  # the served version is untouched
    assert np.isnan(events_decayed(new, [gone])[0]) and not np.isnan(served[0])
    assert versions(cfg.store) == sorted([old.project, new.project])


def test_drop_deletes_every_version_but_the_ones_kept(cfg, drift):
    users = sorted(int(u) for u in drift.events["user_id"].unique())
    made = []
    for n in (10, 20, 30):
        some = drift.events[drift.events["user_id"].isin(users[:n])]
        made.append(load(cfg, *tables(cfg, some, drift.items)))
    assert drop(cfg.store, {made[1].project, made[2].project}) == [made[0].project]
    assert versions(cfg.store) == sorted([made[1].project, made[2].project])
    assert not any(np.isnan(events_decayed(made[2], users[:30])))
    assert not any(np.isnan(events_decayed(made[1], users[:20])))
    with pytest.raises(Exception, match="(?i)not exist|no such table|not found"):
        open_store(made[0]).get_feature_view("user_interest")
    if cfg.store.profile == "local":
        import sqlite3

        with sqlite3.connect(cfg.store.local_dir / "online.db") as db:
            names = [r[0] for r in db.execute("select name from sqlite_master where type = 'table'")]
        assert names and not [n for n in names if made[0].project in n]
    else:
        import redis

        assert not list(redis.Redis(db=int(cfg.store.redis.rsplit("db=", 1)[1])).scan_iter(match=f"*{made[0].project}*"))


def test_a_load_cut_short_publishes_nothing_and_the_rerun_loads_the_rest(cfg, drift, monkeypatch):
    old = load(cfg, *tables(cfg, drift.events.iloc[: len(drift.events) // 2], drift.items))
    window = tables(cfg, drift.events, drift.items)
    calls = []
    materialize = features.store.materialize

    def dies_after_one_view(store, start, end, views, window_days=None):
        calls.append(views)
        materialize(store, start, end, views[:1], window_days)
        raise TimeoutError("killed mid-load")

    monkeypatch.setattr(features.store, "materialize", dies_after_one_view)
    with pytest.raises(TimeoutError):
        load(cfg, *window)
    assert published(cfg) == old  # the pointer still names the served version
    monkeypatch.setattr(features.store, "materialize", lambda store, start, end, views, window_days=None: (
        calls.append(views), materialize(store, start, end, views, window_days)))
    new = load(cfg, *window)
    assert calls[-1] == ("item_popularity", "user_lm_profile") and published(cfg) == new != old
    users = sorted(int(u) for u in drift.events["user_id"].unique())
    assert not any(np.isnan(events_decayed(new, users)))


def test_feasts_own_cli_lists_the_views_of_the_version_just_loaded(cfg, drift):
    import subprocess
    import sys
    from pathlib import Path

    loaded = load(cfg, *tables(cfg, drift.events, drift.items))
    feast = [str(Path(sys.executable).parent / "feast"), "-c", str(cfg.store.local_dir)]
    views = subprocess.run([*feast, "feature-views", "list"], capture_output=True, text=True, timeout=120)
    assert views.returncode == 0, views.stderr[-2000:]
    assert {"user_interest", "item_popularity", "user_lm_profile"} <= set(views.stdout.split())
    projects = subprocess.run([*feast, "projects", "list"], capture_output=True, text=True, timeout=120)
    assert loaded.project in projects.stdout, projects.stdout
