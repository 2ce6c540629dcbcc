"""The canonical tables every adapter produces and every later step reads.

events: user_id, item_id, event_type, value, timestamp (UTC)
items:  item_id, title, year, categories (list), tags (list), text

Ingested tables keep nullable dtypes so that validation, not parsing, decides what a null
means; validated tables are strict (no nulls, plain numpy dtypes).
"""
from __future__ import annotations

import re

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from features.ids import ingested, kind_of, strict

if TYPE_CHECKING:
    from flows.config import IdsConfig

EVENT_COLUMNS = ["user_id", "item_id", "event_type", "value", "timestamp"]
ITEM_COLUMNS = ["item_id", "title", "year", "categories", "tags", "text"]

# Microseconds, not pandas' default nanoseconds: a millisecond epoch read as seconds lands
# around the year 50,000, beyond the nanosecond range, and must survive to be reported.
TIMESTAMP_DTYPE = "datetime64[us, UTC]"

_YEAR = re.compile(r"\((\d{4})\)\s*$")


def timestamps_from_epoch(seconds: pd.Series) -> pd.Series:
    """Epoch seconds (nullable numbers) -> UTC timestamps; nulls become NaT."""
    values = pd.to_numeric(seconds, errors="raise").astype("Float64")
    mask = values.isna().to_numpy()
    micros = np.zeros(len(values), dtype="int64")
    # Round to whole microseconds; float precision beyond that is noise.
    micros[~mask] = np.round(values.to_numpy(dtype="float64", na_value=0.0)[~mask] * 1e6).astype("int64")
    stamps = micros.view("datetime64[us]")
    stamps[mask] = np.datetime64("NaT")
    return pd.Series(stamps, index=seconds.index).dt.tz_localize("UTC")


def seconds_of(timestamps: pd.Series) -> np.ndarray:
    """Timezone-aware timestamps without nulls -> float64 epoch seconds (UTC), the clock every
    decay is computed on."""
    return timestamps.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[us]").astype("int64") / 1e6


def epoch_seconds(timestamps: pd.Series) -> pd.Series:
    """UTC timestamps -> epoch seconds as nullable floats (the inverse of the above)."""
    naive = timestamps.astype(TIMESTAMP_DTYPE).dt.tz_localize(None).to_numpy("datetime64[us]")
    micros = naive.view("int64").astype("float64") / 1e6
    out = pd.Series(micros, index=timestamps.index, dtype="Float64")
    out[timestamps.isna().to_numpy()] = pd.NA
    return out


def title_year(title: str) -> int | None:
    """The release year MovieLens appends to titles: 'Heat (1995)' -> 1995."""
    match = _YEAR.search(title or "")
    return int(match.group(1)) if match else None


def item_text(title: str, categories: list[str], tags: list[str], overview: str | None) -> str:
    """One text per item from whatever the source has, for the language model to read."""
    parts = [title.strip()]
    if categories:
        parts.append("Genres: " + ", ".join(categories) + ".")
    if tags:
        parts.append("Tags: " + ", ".join(tags) + ".")
    if overview and overview.strip():
        parts.append(overview.strip())
    return " ".join(parts)


def events_frame(
    user_id: pd.Series,
    item_id: pd.Series,
    value: pd.Series,
    timestamp: pd.Series,
    event_type: str | pd.Series = "rating",
    ids: IdsConfig | None = None,
) -> pd.DataFrame:
    """Assemble an ingested (nullable) events table in canonical column order and dtypes;
    ids are integers unless ``ids`` says strings."""
    frame = pd.DataFrame(
        {
            "user_id": ingested(user_id, ids.user_id if ids else "int"),
            "item_id": ingested(item_id, ids.item_id if ids else "int"),
            "event_type": pd.array(
                event_type if isinstance(event_type, pd.Series) else [event_type] * len(user_id),
                dtype="string",
            ),
            "value": pd.array(value, dtype="Float64"),
            "timestamp": timestamp.reset_index(drop=True).astype(TIMESTAMP_DTYPE),
        }
    )
    return frame[EVENT_COLUMNS]


def items_frame(
    item_id: pd.Series,
    title: pd.Series,
    categories: list[list[str]],
    tags: list[list[str]] | None = None,
    overview: dict | None = None,
    kind: str = "int",
) -> pd.DataFrame:
    """Assemble an items table; text is built from title, categories, tags and overview
    (keyed by item id)."""
    ids = ingested(item_id, kind)
    titles = pd.array(title, dtype="string")
    tags = tags if tags is not None else [[] for _ in range(len(ids))]
    overview = overview or {}
    texts = [
        item_text(str(t) if t is not pd.NA else "", c, g, overview.get(i) if pd.notna(i) else None)
        for i, t, c, g in zip(ids, titles, categories, tags)
    ]
    frame = pd.DataFrame(
        {
            "item_id": ids,
            "title": titles,
            "year": pd.array([title_year(str(t)) if t is not pd.NA else None for t in titles], dtype="Int64"),
            "categories": pd.Series(categories, dtype=object),
            "tags": pd.Series(tags, dtype=object),
            "text": pd.array(texts, dtype="string"),
        }
    )
    return frame[ITEM_COLUMNS]


def strict_events(events: pd.DataFrame) -> pd.DataFrame:
    """Validated events with plain dtypes (no nulls remain after validation)."""
    return pd.DataFrame(
        {
            "user_id": strict(events["user_id"], kind_of(events["user_id"])),
            "item_id": strict(events["item_id"], kind_of(events["item_id"])),
            "event_type": events["event_type"].astype(str),
            "value": events["value"].astype("float64"),
            "timestamp": events["timestamp"].astype(TIMESTAMP_DTYPE),
        }
    ).reset_index(drop=True)
