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
    env = {"DECAYREC_BUNDLE": str(folder / "bundle"), "DECAYREC_EVENTS_LOG": str(folder / "events.jsonl"),
           "DECAYREC_METRICS": "false"}
    before = {name: os.environ.get(name) for name in env}
    os.environ.update(env)  # read when the service module loads, below
    from serving.service import Recommender

    # The service tunes its process (GC, threads); this one runs other tests after.
    threshold, blas = gc.get_threshold(), [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    try:
        with TestClient(Recommender.to_asgi()) as http:
            yield SimpleNamespace(post=http.post, get=http.get, events_log=folder / "events.jsonl", params=params,
                                  events=pd.read_parquet(folder / "bundle" / "events.parquet"))
    finally:
        # Later tests start bentos of their own from this process's environment.
        for name, value in before.items():
            os.environ.pop(name) if value is None else os.environ.update({name: value})
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
    assert version["kind"] in ("scorer", "sequence") and version["model"].startswith(f"decayrec-{version['kind']}:")
    assert client.get("/readyz").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "<title>decayrec demo</title>" in page.text
    assert len(client.get("/demo/users?n=3").json()) == 3


@pytest.mark.parametrize(
    ("path", "body", "status", "loc", "fragment"),
    [
        ("/recommend", {"user_id": 1, "k": 5, "colour": "red"}, 422, ["body", "colour"], "Extra inputs"),
        ("/recommend", {"user_id": 1, "k": 0}, 422, ["body", "k"], "greater than or equal to 1"),
        ("/recommend", {"user_id": 1, "k": 101}, 422, ["body", "k"], "less than or equal to 100"),
        ("/recommend", {"user_id": "someone"}, 422, ["body", "user_id"], "valid integer"),
        ("/recommend", {"k": 5}, 422, ["body", "user_id"], "Field required"),
        ("/recommend", {"user_id": 1, "context": {"at": "2001-01-01T00:00:00"}}, 422, ["body", "context", "at"], "with a zone"),
        ("/recommend", {"user_id": 1, "context": {"at": "1990-01-01T00:00:00Z"}}, 409, ["body", "context", "at"],
         "outside the service clock's window"),
        ("/recommend", {"user_id": 1, "exclude": list(range(1001))}, 422, ["body", "exclude"], "at most 1000"),
        ("/similar", {"item_id": 1, "k": 1000}, 422, ["body", "k"], "less than or equal to 100"),
        ("/similar", {"item_id": 2**52, "k": 3}, 404, ["body", "item_id"], "is not in the catalogue"),
        ("/explain", {"user_id": 1}, 422, ["body", "item_id"], "Field required"),
        ("/explain", {"user_id": 1, "item_id": 2**52}, 404, ["body", "item_id"], "is not in the catalogue"),
    ],
)
def test_bad_requests_get_their_4xx_naming_the_field(client, path, body, status, loc, fragment):
    reply = client.post(path, json=body)
    assert reply.status_code == status, reply.text
    [problem] = reply.json()["detail"]
    assert problem["loc"] == loc and fragment in problem["msg"], problem


def event(client, **changes) -> dict:
    return {"user_id": a_user(client), "item_id": an_item(client), "event_type": "rating", "value": 4.0,
            "timestamp": clock(client), **changes}


@pytest.mark.parametrize(
    ("changes", "status", "loc", "fragment"),
    [
        ({"timestamp": "yesterday"}, 422, ["body", 0, "timestamp"], "RFC 3339"),
        ({"timestamp": "2003-01-01T00:00:00"}, 422, ["body", 0, "timestamp"], "with a zone"),
        ({"timestamp": 1046476800000}, 422, ["body", 0, "timestamp"], "RFC 3339"),
        ({"timestamp": "1970-01-02T00:00:00Z"}, 409, ["body", 0, "timestamp"], "event 0: timestamp 1970-01-02"),
        ({"timestamp": "2999-01-01T00:00:00Z"}, 409, ["body", 0, "timestamp"], "outside the service clock's window"),
        ({"event_type": "purchase"}, 422, ["body", 0, "event_type"], "'rating'"),
        ({"value": 50.0}, 422, ["body", 0, "value"], "less than or equal to 5"),
        ({"value": "4"}, 422, ["body", 0, "value"], "valid number"),
        ({"item_id": -3}, 422, ["body", 0, "item_id"], "greater than or equal to 0"),
        ({"item_id": 2**52}, 404, ["body", 0, "item_id"], f"item_id {2**52} is not in the catalogue"),
        ({"session": "x"}, 422, ["body", 0, "session"], "Extra inputs"),
    ],
)
def test_bad_events_get_their_4xx_naming_the_event_and_nothing_is_logged(client, changes, status, loc, fragment):
    before = client.events_log.read_text().count("\n") if client.events_log.exists() else 0
    reply = client.post("/events", json=[event(client, **changes)])
    assert reply.status_code == status, reply.text
    [problem] = reply.json()["detail"]
    assert problem["loc"] == loc and fragment in problem["msg"], problem
    after = client.events_log.read_text().count("\n") if client.events_log.exists() else 0
    assert after == before


def test_an_oversized_or_empty_batch_is_refused(client):
    limit = client.params.serving.max_events
    too_many = client.post("/events", json=[event(client)] * (limit + 1))
    assert too_many.status_code == 422 and f"at most {limit} items" in too_many.json()["detail"][0]["msg"]
    assert client.post("/events", json=[]).status_code == 422


def test_a_body_over_the_limit_is_413_before_it_is_parsed(client):
    limit = client.params.serving.max_body_bytes
    reply = client.post("/events", content=b"[" + b" " * limit + b"]", headers={"Content-Type": "application/json"})
    assert reply.status_code == 413 and reply.json()["detail"][0]["type"] == "too_large"
    # Streamed without a Content-Length: counted as it arrives.
    reply = client.post("/recommend", content=iter([b"{" + b" " * limit, b"}"]), headers={"Content-Type": "application/json"})
    assert reply.status_code == 413 and len(reply.content) < 500


def test_without_a_token_set_events_are_open_and_the_schema_says_so(client):
    schema = client.get("/openapi.json").json()
    assert "security" not in schema["paths"]["/events"]["post"] and "401" not in schema["paths"]["/events"]["post"]["responses"]
    recommend = schema["components"]["schemas"]["RecommendRequest"]["properties"]
    assert recommend["k"]["maximum"] == 100 and recommend["user_id"]["maximum"] == 2**53 - 1


def test_a_posted_event_is_logged_and_the_next_recommendation_reflects_it(client):
    user = a_user(client)
    top = client.post("/recommend", json={"user_id": user, "k": 10}).json()["items"]
    reply = client.post("/events", json=[event(client, item_id=top[0]["item_id"], value=5.0)])
    assert reply.status_code == 200 and reply.json() == {"accepted": 1, "duplicates": 0, "online": True}
    assert f'"item_id": {top[0]["item_id"]}' in client.events_log.read_text().splitlines()[-1]
    after = client.post("/recommend", json={"user_id": user, "k": 10}).json()["items"]
    assert top[0]["item_id"] not in [i["item_id"] for i in after]


def test_an_unwritable_log_is_503_and_an_unreadable_one_degrades_answers(client):
    """The log replaced by a folder: nothing can be appended (and nothing acknowledged), and
    reads fail; answers come from memory, flagged."""
    log = client.events_log
    kept = log.read_bytes()
    log.unlink()
    log.mkdir()
    try:
        reply = client.post("/events", json=[event(client, value=3.0)])
        assert reply.status_code == 503 and reply.json()["detail"][0]["msg"].startswith("the event log cannot be written")
        user = a_user(client)
        answer = client.post("/recommend", json={"user_id": user, "k": 3}).json()
        assert answer["degraded"] and len(answer["items"]) == 3
        why = client.post("/explain", json={"user_id": user, "item_id": answer["items"][0]["item_id"]})
        assert why.status_code == 200 and why.json()["degraded"]
    finally:
        log.rmdir()
        log.write_bytes(kept)
    assert not client.post("/recommend", json={"user_id": a_user(client), "k": 3}).json()["degraded"]
