"""The BentoML service: recommend, explain, similar, live events, version, and a demo page.

    bentoml serve serving.service:Recommender     # from the repository, after `decayrec run`
    bentoml serve decayrec:latest                 # the bento the package step built

Routes are FastAPI's, mounted on the service, so request bodies are pydantic models that
refuse unknown fields with a 422 naming them. BentoML adds /livez, /readyz and /metrics.
The module's top level stays light: ``bentoml build`` and every worker import it.
"""
from __future__ import annotations

import asyncio
import json
import os
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import bentoml
import orjson
from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse, Response

from flows.config import ServingConfig
from serving.batching import Batcher
from serving.schemas import BadRequest, Event, ExplainRequest, RecommendRequest, SimilarRequest, check_events, check_k
from serving.worker import limit_threads, settle

if TYPE_CHECKING:
    from serving.engine import Ask

ROOT = Path(__file__).resolve().parents[1]
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
SERVING = ServingConfig.model_validate(MANIFEST["params"]["serving"])
app = FastAPI(title="decayrec", description="Time-decayed, LM-augmented recommendations")


@bentoml.service(
    name="decayrec",
    workers=SERVING.workers,
    http={"host": SERVING.host},  # an open port is opened on purpose (--host), never by default
    traffic={"timeout": SERVING.timeout_s},
    logging={"access": {"enabled": SERVING.access_log}},
    metrics={"enabled": os.environ.get("DECAYREC_METRICS", "true") == "true"},
)
@bentoml.asgi_app(app)
class Recommender:
    # A class attribute, so that `bentoml build` packs the model into the bento.
    model = bentoml.models.BentoModel(MANIFEST["model"])

    def __init__(self) -> None:
        from features.store import open_store
        from serving.engine import Engine, load_bundle
        from serving.event_log import EventLog

        bundle = load_bundle(bundle_dir())
        if os.environ.get("DECAYREC_SIGNAL_CACHE_MB"):  # e.g. 0 to measure every request cold
            serving = bundle.params.serving.model_copy(update={"signal_cache_mb": float(os.environ["DECAYREC_SIGNAL_CACHE_MB"])})
            bundle.params = bundle.params.model_copy(update={"serving": serving})
        self.params = bundle.params
        limit_threads(self.params.serving)
        log_path = os.environ.get("DECAYREC_EVENTS_LOG") or self.params.serving.events_log
        self.engine = Engine(bundle, Path(self.model.path), open_store(self.params.features.store), EventLog(log_path))
        # Scoring is CPU-bound Python and numpy: threads of one process only take turns on
        # the GIL, and interleaving them costs throughput (measured: 108 req/s with one
        # connection, 63 with 32). One batch or request scores at a time per process;
        # parallelism comes from worker processes, and /recommend requests waiting their
        # turn are scored together (serving.batching).
        self.scoring = threading.Lock()
        self.batcher = Batcher(self._recommend_batch, self.params.serving.max_batch, name="recommend-batcher")
        settle(self.params.serving.full_gc_every_s)  # the loaded engine: frozen, never walked by the GC again

    def _recommend_batch(self, asks: list[Ask]) -> list:
        with self.scoring:
            return self.engine.recommend_many(asks)

    # Async: the event loop hands the request to the batcher and reads the next ones while it
    # scores, with no thread-pool hop (measured: 720 against 630 req/s at 32 connections).
    @app.post("/recommend")
    async def recommend(self, request: RecommendRequest) -> Response:
        from serving.engine import Ask

        with _as_http():
            check_k(request.k, self.params)
            at = request.context.at if request.context else None
            answer = await asyncio.wrap_future(self.batcher.submit(Ask(request.user_id, request.k, frozenset(request.exclude or ()), at)))
        return Response(orjson.dumps({
            "user_id": answer.user_id, "model": answer.model, "fallback": answer.fallback, "degraded": answer.degraded,
            "items": [vars(r) for r in answer.items], "timings_ms": answer.timings_ms, "batch": answer.batch,
        }), media_type="application/json")

    @app.post("/explain")
    def explain(self, request: ExplainRequest) -> dict:
        with _as_http(), self.scoring:
            return self.engine.explain(request.user_id, request.item_id)

    @app.post("/similar")
    def similar(self, request: SimilarRequest) -> dict:
        with _as_http(), self.scoring:
            check_k(request.k, self.params)
            return self.engine.similar(request.item_id, request.k)

    @app.post("/events")
    def events(self, events: list[Event]) -> dict:
        import pandas as pd

        with _as_http():
            check_events(events, self.params, datetime.now(timezone.utc))
            frame = pd.DataFrame([e.model_dump() for e in events])
            frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True).astype("datetime64[us, UTC]")
            return self.engine.ingest(frame)

    @app.get("/version")
    def version(self) -> dict:
        return self.engine.info()

    @app.get("/demo/users")
    def demo_users(self, n: int = 20) -> list[int]:
        """The most active users, for the demo page's picker."""
        return self.engine.active_users(min(max(n, 1), self.params.serving.max_k))

    @app.get("/", response_class=HTMLResponse)
    def demo(self) -> str:
        return (STATIC / "demo.html").read_text()


class _as_http:
    """Domain errors as 4xx with their message: a bad request never becomes a 500."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, error, _tb) -> bool:
        from serving.engine import UnknownItem

        if isinstance(error, BadRequest):
            raise HTTPException(status_code=422, detail=str(error)) from error
        if isinstance(error, UnknownItem):
            raise HTTPException(status_code=404, detail=f"unknown item: {error.args[0]}") from error
        return False
