"""The served bento against hostile clients and damaged state, over HTTP: every malformed
request gets its 4xx with a short body, the write token, duplicates, the clock no client
moves, a log with garbage and a torn tail, the default bind, a fuzz run of the whole schema,
and a corrupted online store (last: it damages the shared store, then puts it back)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import psutil
import pytest

from conftest import WRITE_TOKEN, call, serve, stop

BIG = 10**30


def now_of(base: str) -> str:
    return call(base, "/version")[1]["now"]


def known(served) -> tuple[int, int]:
    """A user and an item of the training events."""
    events = pd.read_parquet(Path(served["bento"].path) / "src" / "bundle" / "events.parquet")
    return int(events["user_id"].iloc[0]), int(events["item_id"].iloc[0])


def an_event(served, **changes) -> dict:
    user, item = known(served)
    return {"user_id": user, "item_id": item, "event_type": "rating", "value": 4.0, "timestamp": now_of(served["base"]),
            **changes}


def lines(served) -> int:
    log = served["events_log"]
    return log.read_text().count("\n") if log.exists() else 0


# (path, raw body): JSON with NaN, infinities and overflowing numbers as clients send them.
HOSTILE = [
    ("/recommend", '{"user_id": NaN}'),
    ("/recommend", '{"user_id": Infinity}'),
    ("/recommend", '{"user_id": -Infinity}'),
    ("/recommend", '{"user_id": 1e400}'),
    ("/recommend", f'{{"user_id": {BIG}}}'),
    ("/recommend", f'{{"user_id": {2**63}}}'),
    ("/recommend", '{"user_id": "1"}'),
    ("/recommend", '{"user_id": 1.0}'),
    ("/recommend", '{"user_id": true}'),
    ("/recommend", '{"user_id": 1, "k": "5"}'),
    ("/recommend", '{"user_id": 1, "k": 5.0}'),
    ("/recommend", '{"user_id": 1, "k": NaN}'),
    ("/recommend", '{"user_id": 1, "exclude": [1e400]}'),
    ("/recommend", '{"user_id": 1, "context": {"at": 1046476800000}}'),
    ("/recommend", '{"user_id": 1, "context": {"at": "2003-03-01"}}'),
    ("/recommend", '{"user_id": 1'),
    ("/explain", f'{{"user_id": 1, "item_id": {BIG}}}'),
    ("/explain", f'{{"user_id": 1, "item_id": {2**63}}}'),
    ("/explain", '{"user_id": 1, "item_id": -4.9e26}'),
    ("/explain", '{"user_id": 1, "item_id": NaN}'),
    ("/similar", '{"item_id": 1e400, "k": 3}'),
    ("/similar", '{"item_id": 1, "k": -Infinity}'),
    ("/events", f'[{{"user_id": {BIG}, "item_id": 1, "timestamp": "2003-03-01T00:00:00Z"}}]'),
    ("/events", f'[{{"user_id": {2**63}, "item_id": 1, "timestamp": "2003-03-01T00:00:00Z"}}]'),
    ("/events", '[{"user_id": 1, "item_id": 1, "timestamp": 1046476800000}]'),
    ("/events", '[{"user_id": 1, "item_id": 1, "value": NaN, "timestamp": "2003-03-01T00:00:00Z"}]'),
    ("/events", '[{"user_id": 1, "item_id": 1, "value": 1e400, "timestamp": "2003-03-01T00:00:00Z"}]'),
    ("/events", '{"user_id": 1, "item_id": 1, "timestamp": "2003-03-01T00:00:00Z"}'),
]


@pytest.mark.parametrize(("path", "body"), HOSTILE)
def test_each_malformed_request_gets_a_422_with_a_short_body_and_nothing_is_logged(served, path, body):
    before = lines(served)
    status, reply = call(served["base"], path, data=body.encode())
    assert status == 422, reply
    assert isinstance(reply, dict) and all({"loc", "msg", "type"} == set(e) for e in reply["detail"]), reply
    assert len(json.dumps(reply)) < 2000 and "Infinity" not in json.dumps(reply)
    assert lines(served) == before


def test_times_outside_the_clock_window_are_409_and_non_json_is_400(served):
    base = served["base"]
    status, reply = call(base, "/recommend", {"user_id": 1, "context": {"at": "9999-12-31T23:59:59Z"}})
    assert status == 409 and reply["detail"][0]["loc"] == ["body", "context", "at"]
    assert call(base, "/events", [an_event(served, timestamp="9999-01-01T00:00:00Z")])[0] == 409
    assert call(base, "/events", [an_event(served, timestamp="0001-01-01T00:00:00Z")])[0] == 409
    status, reply = call(base, "/recommend", data=b'{"user_id": 1, "k": "\xff"}')
    assert status == 400 and reply["detail"][0]["type"] == "json_invalid"
    status, reply = call(base, "/demo/users?n=-142")
    assert status == 422 and reply["detail"][0]["loc"] == ["query", "n"]


def test_bodies_over_the_limit_are_413_whatever_their_size(served):
    for size in (2 * 2**20, 20 * 2**20):
        status, reply = call(served["base"], "/events", data=b"[" + b" " * size + b"]")
        assert status == 413 and reply["detail"][0]["type"] == "too_large" and len(json.dumps(reply)) < 500


def test_after_huge_ids_the_service_still_answers(served):
    base = served["base"]
    for user in (BIG, 2**63):
        assert call(base, "/events", data=json.dumps([{**an_event(served), "user_id": user}]).encode())[0] == 422
    assert call(base, "/readyz")[0] == 200
    status, recs = call(base, "/recommend", {"user_id": known(served)[0], "k": 3})
    assert status == 200 and len(recs["items"]) == 3


def test_events_need_the_write_token_when_one_is_set(served):
    base, event = served["base"], [an_event(served, value=2.5)]
    for token in (None, "wrong", WRITE_TOKEN + "x"):
        status, reply = call(base, "/events", event, token=token)
        assert status == 401 and reply["detail"][0]["type"] == "unauthorized"
    schema = call(base, "/openapi.json")[1]
    assert schema["paths"]["/events"]["post"]["security"] == [{"HTTPBearer": []}]
    assert "401" in schema["paths"]["/events"]["post"]["responses"]
    assert call(base, "/recommend", {"user_id": 1, "k": 2}, token=None)[0] == 200  # reads stay open


def test_the_same_event_twice_is_counted_once(served):
    base = served["base"]
    event = an_event(served, user_id=700_001, value=3.5)
    before = lines(served)
    assert call(base, "/events", [event])[1] == {"accepted": 1, "duplicates": 0, "online": True}
    assert call(base, "/events", [event, event])[1] == {"accepted": 0, "duplicates": 2, "online": True}
    assert lines(served) == before + 1
    # A training event posted again is no news either.
    events = pd.read_parquet(Path(served["bento"].path) / "src" / "bundle" / "events.parquet")
    last = events.sort_values("timestamp").iloc[-1]
    replay = {"user_id": int(last["user_id"]), "item_id": int(last["item_id"]), "event_type": str(last["event_type"]),
              "value": float(last["value"]), "timestamp": last["timestamp"].isoformat()}
    assert call(base, "/events", [replay])[1]["duplicates"] == 1


def test_an_event_far_from_the_clock_is_refused_and_no_one_elses_scores_move(served):
    base = served["base"]
    clock = now_of(base)
    user = known(served)[0]
    before = call(base, "/recommend", {"user_id": user, "k": 10})[1]["items"]
    far = an_event(served, user_id=700_002, timestamp=pd.Timestamp.now(tz="UTC").isoformat())
    status, reply = call(base, "/events", [far])
    assert status == 409 and "outside the service clock's window" in reply["detail"][0]["msg"]
    after = call(base, "/recommend", {"user_id": user, "k": 10})[1]["items"]
    assert [(r["item_id"], r["score"]) for r in after] == [(r["item_id"], r["score"]) for r in before]
    # Even an accepted event at the window's edge leaves the clock where it was.
    edge = (pd.Timestamp(clock) + pd.Timedelta(seconds=200)).isoformat()
    assert call(base, "/events", [an_event(served, user_id=700_002, timestamp=edge)])[0] == 200
    assert now_of(base) == clock
    assert call(base, "/recommend", {"user_id": user, "k": 1, "context": {"at": clock}})[0] == 200


def test_a_log_with_garbage_and_a_torn_tail_starts_reports_both_and_keeps_the_next_event(served, tmp_path):
    """A copy of the served log, damaged as a crash and an old version could leave it: a bad
    line, ids past int64, a torn tail. A second server (the bento's default bind, metrics on)
    starts on it, says what it set aside, and reads back the next event it acknowledges."""
    log = tmp_path / "events.jsonl"
    shutil.copyfile(served["events_log"], log) if served["events_log"].exists() else log.touch()
    good = sum(1 for _ in log.open())
    with log.open("a") as handle:
        handle.write("garbage\n")
        handle.write(f'{{"user_id": {BIG}, "item_id": 1, "event_type": "rating", "value": 4.0, '
                     f'"timestamp": "2003-03-01T00:00:00+00:00"}}\n')
        handle.write(f'{{"user_id": {2**63}, "item_id": 1, "event_type": "rating", "value": 4.0, '
                     f'"timestamp": "2003-03-01T00:00:00+00:00"}}\n')
        handle.write('{"user_id": 5, "item_id": 1, "event_ty')
    env = {**served["env"], "DECAYREC_EVENTS_LOG": str(log), "DECAYREC_METRICS": "true"}
    server, base, serve_log = serve(served["summary"]["bento"], tmp_path, env, host=None)
    try:
        port = int(base.rsplit(":", 1)[1])
        bound = {c.laddr.ip for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.laddr.port == port}
        assert bound == {"127.0.0.1"}  # nothing said --host: loopback only
        version = call(base, "/version")[1]
        assert version["event_log"]["set_aside"]["invalid"] == 3
        kept = [json.loads(line) for line in Path(version["event_log"]["quarantine"]).read_text().splitlines()]
        assert {k["kind"] for k in kept} == {"invalid", "torn"}
        metrics = call(base, "/metrics")[1]
        assert 'decayrec_event_log_set_aside_total{kind="torn"} 1.0' in metrics
        assert 'decayrec_event_log_set_aside_total{kind="invalid"}' in metrics
        assert "a torn last line" in serve_log.read_text() and "not JSON" in serve_log.read_text()
        event = an_event(served, user_id=700_003, value=5.0)
        assert call(base, "/events", [event])[1]["accepted"] == 1
        from serving.event_log import EventLog

        logged = EventLog(log).read()
        assert len(logged) == good + 1 and int(logged["user_id"].iloc[-1]) == 700_003
        status, recs = call(base, "/recommend", {"user_id": 700_003, "k": 3})
        assert status == 200 and not recs["fallback"]  # both workers read it back
        assert call(base, "/recommend", {"user_id": 700_004, "k": 3})[1]["fallback"]  # no events: popularity
        metrics = call(base, "/metrics")[1]
        assert 'decayrec_live_events_total{outcome="accepted"} 1.0' in metrics
        assert 'decayrec_recommendations_total{degraded="false",source="model"}' in metrics
        assert 'decayrec_recommendations_total{degraded="false",source="fallback"} 1.0' in metrics
        assert "decayrec_recommend_batch_size_count" in metrics
        newest = re.search(r"^decayrec_newest_feature_event_timestamp_seconds (\S+)$", metrics, re.M)
        # The newest event the features hold: this one, or one an earlier test logged later.
        assert newest and float(newest[1]) == max(logged["timestamp"].max().timestamp(), pd.Timestamp(event["timestamp"]).timestamp())
    finally:
        stop(server, group=True)


def test_a_fuzz_run_of_the_whole_schema_finds_nothing_and_the_service_stays_ready(served, tmp_path):
    """Schemathesis, every check, every operation and the links between them, a fixed budget
    and seed: no 5xx, every response as documented, schema-valid requests accepted."""
    budget = served["params"].serving.max_k  # 100 examples an operation
    report = tmp_path / "report"
    done = subprocess.run(
        [str(Path(sys.executable).parent / "schemathesis"), "run", served["base"] + "/openapi.json", "--checks", "all",
         "--max-examples", str(budget), "--seed", "20261203", "--workers", "2",
         "--header", f"Authorization: Bearer {WRITE_TOKEN}", "--report", "junit,ndjson", "--report-dir", str(report)],
        capture_output=True, text=True, timeout=1500, cwd=tmp_path,  # its cache stays out of the project: every run fresh
    )
    print(done.stdout)  # shown with -s: cases per phase, links covered
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert call(served["base"], "/readyz")[0] == 200
    assert call(served["base"], "/recommend", {"user_id": 1, "k": 3})[0] == 200


def test_a_corrupted_online_store_gives_degraded_answers_everywhere(served):
    base = served["base"]
    store = Path(served["params"].features.store.local_dir) / "online.db"
    kept = store.read_bytes()
    user, _ = known(served)
    item = call(base, "/recommend", {"user_id": user, "k": 1})[1]["items"][0]["item_id"]
    try:
        store.write_bytes(b"not a database " * 4096)
        status, recs = call(base, "/recommend", {"user_id": user, "k": 3})
        assert status == 200 and recs["degraded"] and len(recs["items"]) == 3
        status, why = call(base, "/explain", {"user_id": user, "item_id": item})
        assert status == 200 and why["degraded"] and why["recent"], why
        status, similar = call(base, "/similar", {"item_id": item, "k": 3})
        assert status == 200 and len(similar["lm"]) == 3
    finally:
        store.write_bytes(kept)
