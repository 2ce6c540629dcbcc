"""The /recommend path on BentoML's own adaptive batching, for ``benchmarks/batching.py``.

    bentoml serve benchmarks.bentoml_batched:BentoBatched     # from the repository root

The same engine and bundle as ``serving.service``, answering ``@bentoml.api(batchable=True)``:
BentoML's dispatcher gathers requests from the HTTP server and hands the engine one list.
Its input is BentoML's (``{"asks": [{"user_id": .., "k": ..}]}``), so only the batching
differs from the product's route, not the scoring.
"""
from __future__ import annotations

import sys
from pathlib import Path

import bentoml
from pydantic import BaseModel, Field

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from serving.service import MANIFEST, SERVING, open_engine  # noqa: E402

MAX_LATENCY_MS = int(SERVING.timeout_s * 1000)  # the product's own request timeout


class AskIn(BaseModel):
    user_id: int
    k: int = Field(10, ge=1, le=SERVING.max_k)


@bentoml.service(name="decayrec-bentoml-batched", workers=SERVING.workers, http={"host": "127.0.0.1"},
                 logging={"access": {"enabled": False}})
class BentoBatched:
    model = bentoml.models.BentoModel(MANIFEST["model"])

    def __init__(self) -> None:
        self.engine = open_engine(Path(self.model.path))

    @bentoml.api(batchable=True, max_batch_size=SERVING.max_batch, max_latency_ms=MAX_LATENCY_MS)
    def recommend(self, asks: list[AskIn]) -> list[dict]:
        from serving.engine import Ask

        answers = self.engine.recommend_many([Ask(a.user_id, a.k) for a in asks])
        return [{"user_id": a.user_id, "items": [vars(r) for r in a.items], "batch": a.batch} for a in answers]
