"""The feature repository, read as a schema: entities, sources, views and services.

Feature rows are decay-on-read state (``features.interest``): a view returns the state after
the key's last event before the requested time, and the reader decays it to that time.
Sources are built for their data folders (the file offline store needs absolute paths): the
decayed tables of the features step, and the LM profiles of the profiles step.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Array, Float32, Int64

# A state older than this is treated as absent (a cold user/item): after a year even a
# 90-day half-life has decayed below 7%.
TTL = timedelta(days=365)

# Ids are the source's own, integers or strings (``features.ids``): the entities take their type.
ID_TYPES = {"int": ValueType.INT64, "str": ValueType.STRING}


def user_entity(kind: str = "int") -> Entity:
    return Entity(name="user", join_keys=["user_id"], value_type=ID_TYPES[kind], description="a person who acts on items")


def item_entity(kind: str = "int") -> Entity:
    return Entity(name="item", join_keys=["item_id"], value_type=ID_TYPES[kind], description="a thing to recommend")

USER_SCHEMA = [
    Field(name="interest", dtype=Array(Float32), description="decayed interest per category (raw)"),
    Field(name="interest_share", dtype=Array(Float32), description="interest per category, summing to 1"),
    Field(name="events_decayed", dtype=Float32, description="decayed event count"),
    Field(name="last_event_s", dtype=Int64, description="epoch seconds of the last event"),
    Field(name="recent_event_s", dtype=Array(Int64), description="event times inside the longest window"),
]
ITEM_SCHEMA = [
    Field(name="popularity_short", dtype=Float32, description="decayed interactions, short half-life"),
    Field(name="popularity_long", dtype=Float32, description="decayed interactions, long half-life"),
    Field(name="last_event_s", dtype=Int64, description="epoch seconds of the last interaction"),
]
USER_LM_SCHEMA = [
    Field(name="lm_profile", dtype=Array(Float32), description="decay-weighted mean of the user's item text vectors"),
    Field(name="lm_weight", dtype=Float32, description="the mean's decayed total weight at lm_last_event_s"),
    Field(name="lm_last_event_s", dtype=Int64, description="epoch seconds of the profile's last event"),
]


@dataclass(frozen=True)
class Repository:
    """Every Feast object of the project, for one data folder."""

    user_interest: FeatureView
    item_popularity: FeatureView
    user_lm_profile: FeatureView
    user_interest_push: PushSource
    item_popularity_push: PushSource
    user_lm_profile_push: PushSource
    scorer: FeatureService
    entities: tuple[Entity, Entity]

    def views(self) -> list[FeatureView]:
        return [self.user_interest, self.item_popularity, self.user_lm_profile]

    def objects(self) -> list:
        views = self.views()
        pushes = [self.user_interest_push, self.item_popularity_push, self.user_lm_profile_push]
        batch = [p.batch_source for p in pushes]
        return [*self.entities, *batch, *pushes, *views, self.scorer]


def _file(name: str, folder: Path) -> FileSource:
    return FileSource(name=f"{name}_file", path=str(Path(folder).resolve() / f"{name}.parquet"), timestamp_field="event_timestamp")


def repository(data_dir: Path, profiles_dir: Path, made_with: str = "", user_ids: str = "int", item_ids: str = "int") -> Repository:
    """The repository whose offline sources are the Parquet tables in ``data_dir`` (decayed
    interest and popularity) and ``profiles_dir`` (LM profiles), keyed by ids of the kinds
    ``user_ids`` and ``item_ids`` ("int" or "str"). ``made_with``, the decay settings the
    tables were computed with (``features.store.made_with``), tags every view: rows made with
    other settings are never left in the online store, and the service checks it against its own."""
    tags = {"made_with": made_with} if made_with else {}
    user, item = user_entity(user_ids), item_entity(item_ids)
    user_interest_push = PushSource(name="user_interest_push", batch_source=_file("user_interest", data_dir))
    item_popularity_push = PushSource(name="item_popularity_push", batch_source=_file("item_popularity", data_dir))
    user_lm_profile_push = PushSource(name="user_lm_profile_push", batch_source=_file("user_lm_profile", profiles_dir))
    user_interest = FeatureView(
        name="user_interest", entities=[user], ttl=TTL, schema=USER_SCHEMA, source=user_interest_push, online=True,
        tags=tags,
    )
    item_popularity = FeatureView(
        name="item_popularity", entities=[item], ttl=TTL, schema=ITEM_SCHEMA, source=item_popularity_push, online=True,
        tags=tags,
    )
    user_lm_profile = FeatureView(
        name="user_lm_profile", entities=[user], ttl=TTL, schema=USER_LM_SCHEMA, source=user_lm_profile_push, online=True,
        tags=tags,
    )
    scorer = FeatureService(name="scorer_v1", features=[user_interest, item_popularity, user_lm_profile])
    return Repository(
        user_interest, item_popularity, user_lm_profile,
        user_interest_push, item_popularity_push, user_lm_profile_push, scorer, (user, item),
    )
