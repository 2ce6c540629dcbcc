"""A shop's own export with string ids (``C00017``, ``SKU-0004-B``) through every step, the
served bento included: ids stay as given at every edge, dense indices stay inside."""
from __future__ import annotations

import csv
import random
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import WRITE_TOKEN, call, serve, stop, write_params

CATEGORIES = ["tea", "coffee", "cups"]
EVENTS = ["view", "add_to_cart", "purchase"]


def shop_files(folder: Path, customers: int, skus: int, events: int, seed: int, first_sku: int = 1) -> dict[str, Path]:
    """A small shop export: ``customer,sku,event,qty,ts`` (ISO times with an offset) and
    ``sku,name,category,description``; every customer has events."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"events": folder / "events.csv", "items": folder / "products.csv"}
    with paths["items"].open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["sku", "name", "category", "description"])
        for n in range(1, first_sku + skus):
            out.writerow([f"SKU-{n:04d}-B", f"Product {n}", CATEGORIES[n % 3], f"A {CATEGORIES[n % 3]} product, number {n}"])
    with paths["events"].open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["customer", "sku", "event", "qty", "ts"])
        for n in range(events):
            customer = 1 + n % customers if n < 2 * customers else rng.randint(1, customers)
            sku = rng.randint(1, first_sku + skus - 1)
            out.writerow([f"C{customer:05d}", f"SKU-{sku:04d}-B", rng.choice(EVENTS), rng.randint(1, 3),
                          f"2024-{rng.randint(1, 11):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00+02:00"])
    return paths


def shop_params(folder: Path, files: dict[str, Path]) -> Path:
    path = write_params(folder, files)
    raw = yaml.safe_load(path.read_text())
    raw["data"]["tabular"].update(
        ids={"user_id": "str", "item_id": "str"}, timestamp_format="iso",
        event_columns={"user_id": "customer", "item_id": "sku", "event_type": "event", "value": "qty", "timestamp": "ts"},
        item_columns={"item_id": "sku", "title": "name", "categories": "category", "text": "description"})
    raw["validate"].update(value_min=1, value_max=1000)
    raw["features"]["event_weights"] = {"view": 1.0, "add_to_cart": 2.0, "purchase": 4.0}
    raw["train"]["sequence"]["enabled"] = False
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    from flows.config import load_params
    from flows.pipeline import run_all

    folder = tmp_path_factory.mktemp("shop")
    path = shop_params(folder, shop_files(folder / "raw", customers=60, skus=40, events=2000, seed=3))
    results, _ = run_all(load_params(path))
    return {"folder": folder, "params": path, "results": results}


def engine_of(params_path: Path, log: Path):
    from features.store import open_store
    from flows.config import load_params
    from models.registry import Registry
    from serving.bundle import load_bundle
    from serving.engine import Engine
    from serving.event_log import EventLog

    params = load_params(params_path)
    bundle = load_bundle(params.serving.bundle_dir)
    return Engine(bundle, Registry(params.train.registry_dir).path(bundle.model), open_store(bundle.params.features.store), EventLog(log))


def test_string_ids_stay_strings_in_the_validated_tables_the_store_and_the_bundle(shop):
    from features.online import published
    from features.store import online_users, open_store
    from flows.config import load_params
    from models.embeddings import load_vectors

    params = load_params(shop["params"])
    events = pd.read_parquet(params.validation.validated_dir / "events.parquet")
    assert events["user_id"].map(type).eq(str).all() and events["item_id"].iloc[0].startswith("SKU-")
    item_ids, _, _ = load_vectors(params.lm.out)
    assert item_ids.dtype.kind == "U" and list(item_ids[:2]) == ["SKU-0001-B", "SKU-0002-B"]
    online = online_users(open_store(published(params.features)), ["C00017", "C99999"])
    assert online["user_id"].tolist() == ["C00017", "C99999"]
    assert online["last_event_s"].notna().tolist() == [True, False]


def test_the_engine_recommends_explains_and_takes_events_in_the_shops_ids(shop, tmp_path):
    from features.store import online_users
    from serving.explain import explain, similar

    engine = engine_of(shop["params"], tmp_path / "events.jsonl")
    answer = engine.recommend("C00017", 5)
    skus = [r.item_id for r in answer.items]
    assert len(skus) == 5 and all(isinstance(s, str) and s.startswith("SKU-") for s in skus) and not answer.fallback
    why = explain(engine, "C00017", skus[0])
    assert why["item_id"] == skus[0] and all(isinstance(r["item_id"], str) for r in why["recent"])
    near = similar(engine, skus[0], 3)
    assert [type(n["item_id"]) for n in near["lm"]] == [str] * 3
    at = pd.Timestamp(engine.now, unit="s", tz="UTC") + pd.Timedelta(minutes=1)
    bought = pd.DataFrame({"user_id": ["C00017"], "item_id": [skus[0]], "event_type": ["purchase"], "value": [2.0],
                           "timestamp": [at]}).astype({"timestamp": "datetime64[us, UTC]"})
    assert engine.ingest(bought) == {"accepted": 1, "duplicates": 0, "online": True}
    assert engine.log.read()["user_id"].tolist() == ["C00017"]
    assert int(online_users(engine.store, ["C00017"])["last_event_s"].iloc[0]) == int(at.timestamp())
    assert skus[0] not in [r.item_id for r in engine.recommend("C00017", 5).items]


def test_the_served_bento_speaks_the_shops_ids_and_refuses_numbers(shop):
    from flows.config import load_params

    params = load_params(shop["params"])
    folder = shop["folder"]
    env = {"DECAYREC_EVENTS_LOG": str(folder / "served-events.jsonl"), "DECAYREC_METRICS": "false",
           params.serving.token_env: WRITE_TOKEN}
    server, base, _ = serve(shop["results"]["package"]["bento"], folder, env)
    try:
        status, answer = call(base, "/recommend", {"user_id": "C00017", "k": 5})
        assert status == 200 and all(i["item_id"].startswith("SKU-") for i in answer["items"]), answer
        top = answer["items"][0]["item_id"]
        status, why = call(base, "/explain", {"user_id": "C00017", "item_id": top})
        assert status == 200 and why["item_id"] == top
        now = call(base, "/version")[1]["now"]
        status, taken = call(base, "/events", [{"user_id": "C00017", "item_id": top, "event_type": "purchase", "value": 1.0,
                                                "timestamp": now}])
        assert status == 200 and taken["accepted"] == 1, taken
        assert top not in [i["item_id"] for i in call(base, "/recommend", {"user_id": "C00017", "k": 5})[1]["items"]]
        assert call(base, "/recommend", {"user_id": 17, "k": 5})[0] == 422  # a number is not a string id
        assert call(base, "/similar", {"item_id": "SKU-9999-X", "k": 3})[0] == 404
        assert call(base, "/events", [{"user_id": "C00017", "item_id": top, "event_type": "rating", "value": 1.0,
                                       "timestamp": now}])[0] == 422  # not one of the shop's event types
        users = call(base, "/demo/users?n=3")[1]
        assert len(users) == 3 and all(isinstance(u, str) for u in users)
    finally:
        stop(server, group=True)


def test_a_retrain_with_new_customers_and_skus_keeps_an_old_customers_state_and_answers(shop, tmp_path):
    """New customers and SKUs arrive (the old customers' events unchanged): a new online
    version, in which an old customer's stored state is what it was, and answers in SKUs.
    (C00023: the tests above post live events for C00017 into the served version.)"""
    from features.online import published
    from features.store import online_users, open_store
    from flows.config import load_params
    from flows.pipeline import run_all

    params = load_params(shop["params"])
    served = published(params.features)
    before = online_users(open_store(served), ["C00023"]).drop(columns="user_id")
    old = params.data.tabular
    more = shop_files(tmp_path / "more", customers=20, skus=10, events=300, seed=4, first_sku=41)
    events = pd.concat([pd.read_csv(old.events), pd.read_csv(more["events"]).assign(
        customer=lambda f: f["customer"].str.replace("C000", "N000"))], ignore_index=True)
    events.to_csv(old.events, index=False)
    pd.concat([pd.read_csv(old.items), pd.read_csv(more["items"]).iloc[40:]]).to_csv(old.items, index=False)
    run_all(params)
    after = load_params(shop["params"])
    assert published(after.features).project != served.project
    pd.testing.assert_frame_equal(online_users(open_store(published(after.features)), ["C00023"]).drop(columns="user_id"), before)
    engine = engine_of(shop["params"], tmp_path / "events.jsonl")
    assert "SKU-0045-B" in engine.item_keys and "N00003" in engine.histories
    assert all(r.item_id.startswith("SKU-") for r in engine.recommend("C00023", 5).items)
