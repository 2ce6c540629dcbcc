"""Request bodies of the service. Unknown fields are refused, so a typo is a 422 that names
the field, never a silently ignored option. Limits that depend on configuration (k, batch
size, event time range) are checked by ``check_*`` against ``params.yaml``'s ``serving``."""
from __future__ import annotations

from datetime import datetime, timezone

from pydantic import BaseModel, ConfigDict, Field, field_validator

from flows.config import Params


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Context(_Strict):
    at: datetime | None = Field(None, description="the moment to recommend for (default: the latest known event)")

    @field_validator("at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("needs a timezone, e.g. 2024-05-01T12:00:00Z")
        return value


class RecommendRequest(_Strict):
    user_id: int
    k: int = 10
    exclude: list[int] = Field(default_factory=list)
    context: Context | None = None


class ExplainRequest(_Strict):
    user_id: int
    item_id: int


class SimilarRequest(_Strict):
    item_id: int
    k: int = 10


class Event(_Strict):
    user_id: int
    item_id: int
    event_type: str = "rating"
    value: float = 1.0
    timestamp: datetime

    @field_validator("timestamp")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("needs a timezone, e.g. 2024-05-01T12:00:00Z")
        return value.astimezone(timezone.utc)


class BadRequest(ValueError):
    """A request that is well formed but outside what the service accepts; names the field."""


def check_k(k: int, params: Params) -> None:
    if not 1 <= k <= params.serving.max_k:
        raise BadRequest(f"k must be between 1 and {params.serving.max_k}, got {k}")


def check_events(events: list[Event], params: Params, now: datetime) -> None:
    """Batch size, event types, values and time range; the message names the event's index."""
    limit = params.serving.max_events
    if not 1 <= len(events) <= limit:
        raise BadRequest(f"a batch holds 1 to {limit} events, got {len(events)}")
    weights = params.features.event_weights
    low, high = params.validation.value_min, params.validation.value_max
    earliest = params.validation.min_timestamp
    latest = now.timestamp() + params.serving.max_future_s
    for i, event in enumerate(events):
        where = f"event {i} (user_id {event.user_id}, item_id {event.item_id})"
        if event.event_type not in weights:
            raise BadRequest(f"{where}: event_type {event.event_type!r} is not one of {sorted(weights)}")
        if not low <= event.value <= high:
            raise BadRequest(f"{where}: value {event.value} is outside [{low}, {high}]")
        if event.timestamp < earliest:
            raise BadRequest(f"{where}: timestamp {event.timestamp.isoformat()} is before {earliest.isoformat()}")
        if event.timestamp.timestamp() > latest:
            raise BadRequest(f"{where}: timestamp {event.timestamp.isoformat()} is in the future")
