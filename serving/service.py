"""The BentoML service: recommend, explain, similar, live events, version, and a demo page.

    bentoml serve serving.service:Recommender     # from the repository, after `decayrec run`
    bentoml serve decayrec:latest                 # the bento the package step built

Routes are FastAPI's, mounted on the service. Request bodies are strict pydantic models
built from params.yaml (``serving.schemas``), so /openapi.json states every limit enforced;
``serving.edge`` gives every 4xx one bounded shape and refuses oversized bodies before
parsing. It binds 127.0.0.1 unless told otherwise (``--host``), and /events takes writes only
with the token in ``serving.token_env``'s variable, when that is set. BentoML adds /livez,
/readyz and /metrics, and BentoML's own clients call the POST routes by name
(``serving.client_schema``). The module's top level stays light: ``bentoml build`` and every
worker import it.
"""
from __future__ import annotations

import asyncio
import json
import os
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import bentoml
import orjson
from fastapi import Body, Depends, FastAPI, HTTPException, Query
from fastapi.responses import HTMLResponse, Response

from flows.config import Params
from serving import answers, openapi
from serving.batching import Batcher
from serving.client_schema import ClientSchema
from serving.edge import documented, install, raising_http, token_guard
from serving.schemas import request_models
from serving.worker import settle, tune

if TYPE_CHECKING:
    from serving.engine import Ask, Engine

ROOT = Path(__file__).resolve().parents[1]
EPOCH, MICROSECOND = datetime(1970, 1, 1, tzinfo=timezone.utc), timedelta(microseconds=1)
STATIC = Path(__file__).resolve().parent / "static"


def bundle_dir() -> Path:
    """``DECAYREC_BUNDLE`` (absolute, or relative to the source root); else ``bundle/`` in a
    built bento's source; else params.yaml's ``serving.bundle_dir`` (serving from a checkout)."""
    if os.environ.get("DECAYREC_BUNDLE"):
        return ROOT / os.environ["DECAYREC_BUNDLE"]
    if (ROOT / "bundle" / "bundle.json").exists():
        return ROOT / "bundle"
    from flows.config import load_params

    return ROOT / load_params(ROOT / "params.yaml").serving.bundle_dir


def _manifest() -> dict:
    path = bundle_dir() / "bundle.json"
    if not path.exists():
        raise RuntimeError(f"no serving bundle at {path}: run `decayrec run` (or `decayrec package`) first")
    return json.loads(path.read_text())


MANIFEST = _manifest()
PARAMS = Params.model_validate(MANIFEST["params"])
SERVING = PARAMS.serving
MODELS = request_models(PARAMS)
RecommendRequest, ExplainRequest, SimilarRequest, Event = MODELS.recommend, MODELS.explain, MODELS.similar, MODELS.event
Events = Annotated[list[Event], Body(min_length=1, max_length=SERVING.max_events)]  # type: ignore[valid-type]
# The write token comes from the environment only; unset, /events is open (and the schema says so).
TOKEN = os.environ.get(SERVING.token_env) or None
WRITE_GUARD = [Depends(token_guard(TOKEN))] if TOKEN else []

app = FastAPI(title="decayrec", version=MANIFEST["model"], description=(
    "Time-decayed, LM-augmented recommendations. Request bodies over "
    f"{SERVING.max_body_bytes} bytes get a 413 before they are parsed; every 4xx body is ErrorBody."))
install(app, SERVING.max_body_bytes)
openapi.install(app)
READ_ERRORS = documented(400, 404, 409, 413, 422)
# The service's own series beside BentoML's request histograms; with several workers each
# process reports its own and BentoML's multiprocess registry sums (gauges: the newest).
SET_ASIDE = bentoml.metrics.Counter(
    name="decayrec_event_log_set_aside", documentation="event log lines skipped: invalid, or a torn tail",
    labelnames=["kind"])
ANSWERS = bentoml.metrics.Counter(
    name="decayrec_recommendations", documentation="/recommend answers, by what made them: the model, or the "
    "decayed-popularity fallback (a user with no events); degraded: the online store or event log was unreadable",
    labelnames=["source", "degraded"])
BATCH = bentoml.metrics.Histogram(
    name="decayrec_recommend_batch_size", documentation="/recommend requests scored together",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128))
LIVE_EVENTS = bentoml.metrics.Counter(
    name="decayrec_live_events", documentation="events posted to /events: accepted (logged, then acknowledged), or "
    "duplicates of events already kept", labelnames=["outcome"])
NEWEST_EVENT = bentoml.metrics.Gauge(
    name="decayrec_newest_feature_event_timestamp_seconds", documentation="epoch seconds of the newest event in the "
    "served features; its age is time() minus this", multiprocess_mode="max")


def open_engine(model_path: Path) -> Engine:
    """The engine over the bundle (``bundle_dir``) and the model at ``model_path``, with the
    worker's threads limited; its live events go to ``DECAYREC_EVENTS_LOG`` or params'."""
    from features.store import open_store
    from serving.bundle import load_bundle
    from serving.engine import Engine
    from serving.event_log import EventLog

    bundle = load_bundle(bundle_dir())
    if os.environ.get("DECAYREC_SIGNAL_CACHE_MB"):  # e.g. 0 to measure every request cold
        serving = bundle.params.serving.model_copy(update={"signal_cache_mb": float(os.environ["DECAYREC_SIGNAL_CACHE_MB"])})
        bundle.params = bundle.params.model_copy(update={"serving": serving})
    tune(bundle.params.serving)
    log_path = os.environ.get("DECAYREC_EVENTS_LOG") or bundle.params.serving.events_log
    return Engine(bundle, model_path, open_store(bundle.params.features.store),
                  EventLog(log_path, on_reject=lambda kind: SET_ASIDE.labels(kind=kind).inc()))


@bentoml.service(
    name="decayrec",
    workers=SERVING.workers,
    http={"host": SERVING.host},  # an open port is opened on purpose (--host), never by default
    traffic={"timeout": SERVING.timeout_s},
    logging={"access": {"enabled": SERVING.access_log}},
    # BentoML traces every request with OpenTelemetry, exported or not: /recommend only when asked.
    tracing={"excluded_urls": [] if SERVING.trace_recommend else ["/recommend"]},
    metrics={"enabled": os.environ.get("DECAYREC_METRICS", "true") == "true"},
)
@bentoml.asgi_app(app)
class Recommender:
    # A class attribute, so that `bentoml build` packs the model into the bento.
    model = bentoml.models.BentoModel(MANIFEST["model"])

    def __init__(self) -> None:
        self.engine = open_engine(Path(self.model.path))
        self.params = self.engine.params
        # Scoring is CPU-bound Python and numpy: threads of one process only take turns on
        # the GIL, and interleaving them costs throughput (measured: 108 req/s with one
        # connection, 63 with 32). One batch or request scores at a time per process;
        # parallelism comes from worker processes, and /recommend requests waiting their
        # turn are scored together (serving.batching).
        self.scoring = threading.Lock()
        self.batcher = Batcher(self._recommend_batch, self.params.serving.max_batch, name="recommend-batcher")
        NEWEST_EVENT.set(self.engine.newest_event_s)
        settle(self.params.serving.full_gc_every_s)  # the loaded engine: frozen, never walked by the GC again

    def _recommend_batch(self, asks: list[Ask]) -> list:
        BATCH.observe(len(asks))
        with self.scoring:
            answers = self.engine.recommend_many(asks)
        NEWEST_EVENT.set(self.engine.newest_event_s)
        return answers

    @app.post("/explain", operation_id="explain", response_model=answers.Explanation, responses=READ_ERRORS)
    def explain(self, request: ExplainRequest) -> dict:  # type: ignore[valid-type]
        from serving.explain import explain

        with raising_http(), self.scoring:
            return explain(self.engine, request.user_id, request.item_id)

    @app.post("/similar", operation_id="similar", response_model=answers.Similar, responses=READ_ERRORS)
    def similar(self, request: SimilarRequest) -> dict:  # type: ignore[valid-type]
        from serving.explain import similar

        with raising_http(), self.scoring:
            return similar(self.engine, request.item_id, request.k)

    @app.post("/events", operation_id="events", response_model=answers.Accepted, dependencies=WRITE_GUARD,
              responses=documented(400, 404, 409, 413, 422, 503, *([401] if TOKEN else [])))
    def events(self, events: Events) -> dict:  # type: ignore[valid-type]
        import numpy as np
        import pandas as pd

        frame = pd.DataFrame([e.model_dump(exclude={"timestamp"}) for e in events])
        # Microseconds, exactly: any year the schema admits fits (nanoseconds end in 2262).
        micros = np.array([(e.timestamp - EPOCH) // MICROSECOND for e in events], dtype="datetime64[us]")
        frame["timestamp"] = pd.DatetimeIndex(micros).tz_localize("UTC")
        with raising_http():
            try:
                accepted = self.engine.ingest(frame)
            except OSError as error:
                raise HTTPException(503, f"the event log cannot be written ({type(error).__name__}); nothing was kept") from error
        LIVE_EVENTS.labels(outcome="accepted").inc(accepted["accepted"])
        LIVE_EVENTS.labels(outcome="duplicate").inc(accepted["duplicates"])
        NEWEST_EVENT.set(self.engine.newest_event_s)
        return accepted

    @app.get("/version", operation_id="version", response_model=answers.Version)
    def version(self) -> dict:
        return self.engine.info()

    @app.get("/demo/users", operation_id="demo_users", response_model=list[int | str], responses=documented(422))
    def demo_users(self, n: Annotated[int, Query(ge=1, le=SERVING.max_k)] = 20) -> list[int | str]:
        """The most active users, for the demo page's picker."""
        return self.engine.active_users(n)

    @app.get("/", operation_id="demo", response_class=HTMLResponse)
    def demo(self) -> str:
        return (STATIC / "demo.html").read_text()


# Async and outside the class: the event loop hands the request to the batcher and reads
# the next ones while it scores, with no thread-pool hop. A method's ``self`` is a FastAPI
# dependency that BentoML resolves synchronously, in the thread pool, for every request;
# the service instance is read here instead. An async method had served 720 against 630
# req/s for a sync one at 32 connections on ml-1m; leaving the class and tracing (above)
# then took it from 1,222 to 1,493 req/s and its p99 from 40.6 to 32.2 ms (py-spy: the
# pool hop and OpenTelemetry's spans had been half of the HTTP path's CPU).
@app.post("/recommend", operation_id="recommend", response_model=None,
          responses={200: {"model": answers.Recommendations, "links": answers.LINKS}, **READ_ERRORS})
async def recommend(request: RecommendRequest) -> Response:  # type: ignore[valid-type]
    from serving.engine import Ask

    service = bentoml.get_current_service()
    with raising_http():
        at = request.context.at if request.context else None
        answer = await asyncio.wrap_future(service.batcher.submit(Ask(request.user_id, request.k, frozenset(request.exclude), at)))
    ANSWERS.labels(source="fallback" if answer.fallback else "model", degraded=str(answer.degraded).lower()).inc()
    return Response(orjson.dumps({
        "user_id": answer.user_id, "model": answer.model, "fallback": answer.fallback, "degraded": answer.degraded,
        "items": [vars(r) for r in answer.items], "timings_ms": answer.timings_ms, "batch": answer.batch,
        "as_of": datetime.fromtimestamp(answer.as_of, tz=timezone.utc).isoformat(),
    }), media_type="application/json")


# BentoML's clients (bentoml.SyncHTTPClient(url).recommend(...)) find the routes above here.
Recommender.add_asgi_middleware(ClientSchema, bentoml_schema=Recommender.schema, openapi=app.openapi)
