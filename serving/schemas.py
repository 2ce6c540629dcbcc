"""What the service accepts and answers, built from ``params.yaml`` so that the OpenAPI
schema states every limit the service enforces: id ranges, ``k``, list and batch sizes,
event types, value ranges, finite numbers only, timestamps as RFC 3339 text with a zone.

Nothing is coerced: ``"5"``, ``5.0`` and ``true`` are not the integer 5, and an epoch number
is not a timestamp (its unit would be a guess). Unknown fields are refused, so a typo is a
422 that names the field. What the schema cannot say (an item in the catalogue, a time
within the service clock's window) is checked by the engine: 404 and 409.

Every 4xx body has one shape, ``ErrorBody``: a list of ``{loc, msg, type}`` that never
repeats the input (a 20 MB or non-finite input cannot come back).
"""
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from flows.config import Params

# Ids travel as JSON numbers: above 2^53 a JavaScript client (and any double) silently rounds
# them to another id, and int64 storage inside (logs, Parquet, numpy) could not keep 2^63.
MAX_ID = 2**53 - 1
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


class BadRequest(ValueError):
    """Well formed, but not what the service accepts (422); names the field."""


class OutsideClock(BadRequest):
    """A time outside the window around the service clock (409): valid by the schema, refused
    by the state of the service."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ErrorItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(BaseModel):
    detail: list[ErrorItem]


def _rfc3339(value: Any) -> datetime:
    """Text with an explicit zone, parsed; anything else refused (no epoch numbers)."""
    if not isinstance(value, str) or not RFC3339.fullmatch(value):
        raise ValueError("must be an RFC 3339 date-time with a zone, e.g. 2024-05-01T12:00:00Z")
    return datetime.fromisoformat(value.replace("z", "Z").replace("t", "T")).astimezone(timezone.utc)


Timestamp = Annotated[datetime, BeforeValidator(_rfc3339), Field(json_schema_extra={"format": "date-time"})]
Id = Annotated[int, Field(ge=0, le=MAX_ID)]
# A string id (``data.tabular.ids``): printable text of bounded length; a number is not one.
MAX_STR_ID = 128
StrId = Annotated[str, Field(min_length=1, max_length=MAX_STR_ID, pattern=r"^[^\x00-\x1f\x7f]+$")]
IDS = {"int": Id, "str": StrId}


@dataclass(frozen=True)
class Models:
    recommend: type[BaseModel]
    explain: type[BaseModel]
    similar: type[BaseModel]
    event: type[BaseModel]


def request_models(params: Params) -> Models:
    """The request bodies under ``params``' limits."""
    serving, validation = params.serving, params.validation
    clock = serving.clock
    window = (f"within [now - {clock.past_s:g} s, now + {clock.future_s:g} s] of the service clock "
              f"({clock.kind}; GET /version says its now), else 409")
    ahead = (f"the moment to recommend for, within [now - {clock.future_s:g} s, now + {clock.ahead_s:g} s] of the "
             f"service clock, else 409 (default: its now)")
    UserId, ItemId = IDS[params.data.ids.user_id], IDS[params.data.ids.item_id]
    K = Annotated[int, Field(ge=1, le=serving.max_k, description=f"how many items, 1 to {serving.max_k}")]
    EventType = Literal[tuple(sorted(params.features.event_weights))]  # type: ignore[valid-type]
    ranges = {t: (validation.value_min, validation.value_max) for t in params.features.event_weights} | {
        t: tuple(r) for t, r in validation.value_ranges.items() if t in params.features.event_weights}
    low, high = min(r[0] for r in ranges.values()), max(r[1] for r in ranges.values())
    Value = Annotated[float, Field(ge=low, le=high, allow_inf_nan=False,
                                   description="; ".join(f"{t}: [{a:g}, {b:g}]" for t, (a, b) in sorted(ranges.items())))]
    types = sorted(params.features.event_weights)
    # A default only where it cannot be wrong: the one event type, a value inside the range.
    default_type = types[0] if len(types) == 1 else ...
    default_value = 1.0 if validation.value_min <= 1.0 <= validation.value_max else ...

    class Context(_Strict):
        at: Timestamp | None = Field(None, description=ahead)

    class RecommendRequest(_Strict):
        user_id: UserId
        k: K = 10
        exclude: list[ItemId] = Field(default_factory=list, max_length=serving.max_exclude)
        context: Context | None = None

    class ExplainRequest(_Strict):
        user_id: UserId
        item_id: ItemId

    class SimilarRequest(_Strict):
        item_id: ItemId
        k: K = 10

    class Event(_Strict):
        user_id: UserId
        item_id: ItemId
        event_type: EventType = Field(default_type)
        value: Value = Field(default_value)
        timestamp: Timestamp = Field(description=f"RFC 3339 with a zone, {window}")

        @model_validator(mode="after")
        def _in_its_range(self):
            # Each event type's values have a range of their own (validate.value_ranges).
            a, b = ranges[self.event_type]
            if not a <= self.value <= b:
                raise ValueError(f"the value of a {self.event_type} event must be in [{a:g}, {b:g}]")
            return self

    return Models(RecommendRequest, ExplainRequest, SimilarRequest, Event)
