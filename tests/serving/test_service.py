"""The service's HTTP layer in process (BentoML's ASGI app under Starlette's test client):
every endpoint, and a 4xx that names the problem for every kind of bad request."""
from __future__ import annotations

import gc
import os
from types import SimpleNamespace

import pandas as pd
import pytest
from threadpoolctl import threadpool_info, threadpool_limits


@pytest.fixture(scope="module")
def client(trained, tmp_path_factory):
    from starlette.testclient import TestClient

    from conftest import own_store
    from flows.config import load_params
    from models.registry import Registry
    from serving.bundle import write_bundle

    folder = tmp_path_factory.mktemp("service")
    params = load_params(own_store(trained, folder))
    registry = Registry(params.train.registry_dir)
    tag = registry.champion()
    write_bundle(params, tag, registry.info(tag), folder / "bundle")
    os.environ.update(DECAYREC_BUNDLE=str(folder / "bundle"), DECAYREC_EVENTS_LOG=str(folder / "events.jsonl"),
                      DECAYREC_METRICS="false")
    from serving.service import Recommender

    # The service tunes its process (GC, threads); this one runs other tests after.
    threshold, blas = gc.get_threshold(), [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    try:
        with TestClient(Recommender.to_asgi()) as http:
            yield SimpleNamespace(post=http.post, get=http.get, events_log=folder / "events.jsonl", params=params,
                                  events=pd.read_parquet(folder / "bundle" / "events.parquet"))
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
        if blas:
            threadpool_limits(max(blas), user_api="blas")


def a_user(client) -> int:
    return int(client.events["user_id"].iloc[0])


def an_item(client) -> int:
    return int(client.events["item_id"].iloc[0])


def clock(client) -> str:
    return client.get("/version").json()["now"]


def test_recommend_returns_k_items_with_scores_and_reasons(client):
    reply = client.post("/recommend", json={"user_id": a_user(client), "k": 5})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert len(body["items"]) == 5 and not body["fallback"] and not body["degraded"]
    assert all({"item_id", "title", "score", "source", "reason"} <= set(item) for item in body["items"])


def test_a_worker_keeps_full_collections_off_requests(client):
    from serving.worker import NEVER

    assert gc.get_freeze_count() > 0 and gc.get_threshold()[2] == NEVER


def test_an_unknown_user_gets_fallback_popularity(client):
    body = client.post("/recommend", json={"user_id": 123456789, "k": 3}).json()
    assert body["fallback"] and [i["source"] for i in body["items"]] == ["pop"] * 3


def test_explain_similar_version_readiness_and_the_demo_page(client):
    item = client.post("/recommend", json={"user_id": a_user(client), "k": 1}).json()["items"][0]["item_id"]
    why = client.post("/explain", json={"user_id": a_user(client), "item_id": item})
    assert why.status_code == 200 and why.json()["topics"]["lately"] and why.json()["recent"]
    similar = client.post("/similar", json={"item_id": an_item(client), "k": 3})
    assert similar.status_code == 200 and len(similar.json()["lm"]) == 3
    version = client.get("/version").json()
    assert version["model"].startswith("decayrec-scorer:") and version["kind"] in ("scorer", "sequence")
    assert client.get("/readyz").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "<title>decayrec demo</title>" in page.text
    assert len(client.get("/demo/users?n=3").json()) == 3


@pytest.mark.parametrize(
    ("path", "body", "fragment"),
    [
        ("/recommend", {"user_id": 1, "k": 5, "colour": "red"}, "colour"),
        ("/recommend", {"user_id": 1, "k": 0}, "k must be between 1 and 100, got 0"),
        ("/recommend", {"user_id": 1, "k": 101}, "k must be between 1 and 100, got 101"),
        ("/recommend", {"user_id": "someone"}, "user_id"),
        ("/recommend", {"k": 5}, "user_id"),
        ("/recommend", {"user_id": 1, "context": {"at": "2001-01-01T00:00:00"}}, "needs a timezone"),
        ("/recommend", {"user_id": 1, "context": {"at": "1990-01-01T00:00:00Z"}}, "before the latest known event"),
        ("/similar", {"item_id": 1, "k": 1000}, "k must be between"),
        ("/explain", {"user_id": 1}, "item_id"),
    ],
)
def test_bad_requests_get_a_422_that_names_the_problem(client, path, body, fragment):
    reply = client.post(path, json=body)
    assert reply.status_code == 422, reply.text
    assert fragment in reply.text


def test_unknown_items_are_404(client):
    assert client.post("/similar", json={"item_id": -1, "k": 3}).status_code == 404
    assert client.post("/explain", json={"user_id": a_user(client), "item_id": -1}).status_code == 404


def event(client, **changes) -> dict:
    return {"user_id": a_user(client), "item_id": an_item(client), "event_type": "rating", "value": 4.0,
            "timestamp": clock(client), **changes}


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"timestamp": "yesterday"}, "timestamp"),
        ({"timestamp": "2003-01-01T00:00:00"}, "needs a timezone"),
        ({"timestamp": "1970-01-02T00:00:00Z"}, "event 0 (user_id"),
        ({"timestamp": "2999-01-01T00:00:00Z"}, "is in the future"),
        ({"event_type": "purchase"}, "event_type 'purchase' is not one of ['rating']"),
        ({"value": 50.0}, "value 50.0 is outside [0.5, 5.0]"),
        ({"item_id": -3}, "event 0: item_id -3 is not in the catalogue"),
        ({"session": "x"}, "session"),
    ],
)
def test_bad_events_get_a_422_naming_the_event_and_nothing_is_logged(client, changes, fragment):
    before = client.events_log.read_text().count("\n") if client.events_log.exists() else 0
    reply = client.post("/events", json=[event(client, **changes)])
    assert reply.status_code == 422, reply.text
    assert fragment in reply.text
    after = client.events_log.read_text().count("\n") if client.events_log.exists() else 0
    assert after == before


def test_an_oversized_or_empty_batch_is_refused(client):
    limit = client.params.serving.max_events
    too_many = client.post("/events", json=[event(client)] * (limit + 1))
    assert too_many.status_code == 422 and f"a batch holds 1 to {limit} events, got {limit + 1}" in too_many.text
    assert client.post("/events", json=[]).status_code == 422


def test_a_posted_event_is_logged_and_the_next_recommendation_reflects_it(client):
    user = a_user(client)
    top = client.post("/recommend", json={"user_id": user, "k": 10}).json()["items"]
    reply = client.post("/events", json=[event(client, item_id=top[0]["item_id"], value=5.0)])
    assert reply.status_code == 200 and reply.json() == {"accepted": 1, "online": True}
    assert f'"item_id": {top[0]["item_id"]}' in client.events_log.read_text().splitlines()[-1]
    after = client.post("/recommend", json={"user_id": user, "k": 10}).json()["items"]
    assert top[0]["item_id"] not in [i["item_id"] for i in after]
