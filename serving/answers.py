"""The shapes of the service's answers, for its OpenAPI schema (and the fuzz test that holds
the service to it). /recommend is serialised by hand (orjson, no validation on the hot
path); the others go through these models."""
from __future__ import annotations

from pydantic import BaseModel


class Item(BaseModel):
    item_id: int | str
    title: str
    score: float
    source: str
    reason: str


class Recommendations(BaseModel):
    user_id: int | str
    model: str | None
    fallback: bool  # decayed popularity: the user has no events
    degraded: bool  # the online store or the event log could not be read: from memory
    items: list[Item]
    timings_ms: dict[str, float]
    batch: int
    as_of: str  # the moment scored for: context.at, else the service clock (RFC 3339)


class Topic(BaseModel):
    topic: str
    weight: float
    overall: float | None = None  # fading topics: the share over all the user's events


class Topics(BaseModel):
    lately: list[Topic]
    fading: list[Topic]


class Recent(BaseModel):
    item_id: int | str
    title: str
    decay_weight: float
    days_ago: float
    cf_similarity: float | None = None
    lm_similarity: float | None = None


class Explanation(BaseModel):
    user_id: int | str
    item_id: int | str
    title: str
    fallback: bool
    degraded: bool
    topics: Topics
    recent: list[Recent]
    reason: str | None = None
    lm_score: float | None = None
    half_life_days: float | None = None
    model_score: float | None = None
    rank: int | None = None
    source: str | None = None


class Neighbour(BaseModel):
    item_id: int | str
    title: str
    similarity: float


class Similar(BaseModel):
    item_id: int | str
    title: str
    degraded: bool
    lm: list[Neighbour]
    cf: list[Neighbour]


class Accepted(BaseModel):
    accepted: int  # new events, logged and folded in
    duplicates: int  # events taken before (a retry): not counted again
    online: bool  # the online store took them (else they are in the log and memory)


class SetAside(BaseModel):
    invalid: int
    torn: int


class EventLogState(BaseModel):
    set_aside: SetAside  # lines this worker skipped: invalid, or a torn tail
    quarantine: str


class Version(BaseModel):
    model: str
    kind: str
    dataset: str
    users: int
    items: int
    now: str
    clock: str
    event_types: list[str]  # what /events takes, the strongest signal first
    event_log: EventLogState
    hp: dict


# A recommendation leads to its explanation, its neighbours and an event on it (the fuzz test follows these).
LINKS = {
    "ExplainTheTopItem": {
        "operationId": "explain",
        "requestBody": {"user_id": "$request.body#/user_id", "item_id": "$response.body#/items/0/item_id"},
    },
    "RateTheTopItem": {
        "operationId": "events",
        "requestBody": [{"user_id": "$request.body#/user_id", "item_id": "$response.body#/items/0/item_id",
                         "timestamp": "$response.body#/as_of"}],
    },
    "SimilarToTheTopItem": {
        "operationId": "similar",
        "requestBody": {"item_id": "$response.body#/items/0/item_id"},
    },
}
