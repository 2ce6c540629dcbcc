"""Source adapters: each turns one data set's files into the canonical events and items.

Adapters parse and reshape; they do not judge. Nulls, ranges, duplicates and unknown items
are left for validation, which reports them all at once instead of stopping at the first.
"""
from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from features.contract import events_frame, items_frame, timestamps_from_epoch
from features.errors import DataError
from features.reading import read_delimited, read_text, select_columns, to_numbers
from features.sources import locate, locate_optional

if TYPE_CHECKING:
    from flows.config import DataConfig, TabularConfig

NO_GENRE = "(no genres listed)"


@dataclass
class Ingested:
    """Canonical tables plus where each came from, so errors can name file lines."""

    events: pd.DataFrame
    items: pd.DataFrame
    # table -> {"file": path, "first_line": line of row 0, or None for binary formats}
    sources: dict[str, dict] = field(default_factory=dict)


def _split_categories(values: pd.Series, sep: str) -> list[list[str]]:
    return [
        [] if pd.isna(v) or v == NO_GENRE else [c for c in str(v).split(sep) if c]
        for v in values
    ]


def _events_from_movielens(frame: pd.DataFrame) -> pd.DataFrame:
    return events_frame(
        frame["user_id"], frame["item_id"], frame["value"], timestamps_from_epoch(frame["timestamp"])
    )


def tmdb_overviews(tmdb_folder: Path, links_csv: Path) -> dict[int, str]:
    """MovieLens movieId -> TMDB plot overview, joined through links.csv's tmdbId."""
    archive = tmdb_folder / "tmdb_5000_movies.csv.zip"
    with zipfile.ZipFile(archive) as zipped:
        with zipped.open("tmdb_5000_movies.csv") as handle:
            tmdb = pd.read_csv(io.TextIOWrapper(handle, encoding="utf-8"), usecols=["id", "overview"])
    links, _ = read_delimited(links_csv, ["movieId", "tmdbId"], numeric=["movieId", "tmdbId"])
    links = links.dropna().astype("int64")
    joined = links.merge(tmdb.dropna(), left_on="tmdbId", right_on="id")
    return dict(zip(joined["movieId"].astype(int), joined["overview"].astype(str)))


def _top_tags(tags: pd.DataFrame, limit: int) -> dict[int, list[str]]:
    """Each movie's most used tags (case-folded), most frequent first, ties by name."""
    tags = tags.dropna().assign(tag=lambda t: t["tag"].astype(str).str.strip().str.lower())
    counts = tags.groupby(["movieId", "tag"]).size().rename("n").reset_index()
    counts = counts.sort_values(["movieId", "n", "tag"], ascending=[True, False, True])
    top = counts.groupby("movieId").head(limit)
    return {int(k): list(v) for k, v in top.groupby("movieId")["tag"]}


def load_ml_latest_small(folder: Path, overviews: dict[int, str], max_tags: int) -> Ingested:
    ratings_path = folder / "ratings.csv"
    ratings, ratings_line = read_delimited(
        ratings_path,
        ["userId", "movieId", "rating", "timestamp"],
        numeric=["userId", "movieId", "rating", "timestamp"],
    )
    ratings.columns = ["user_id", "item_id", "value", "timestamp"]
    movies_path = folder / "movies.csv"
    movies, movies_line = read_delimited(movies_path, ["movieId", "title", "genres"], numeric=["movieId"])
    tags, _ = read_delimited(folder / "tags.csv", ["movieId", "tag"], numeric=["movieId"])
    tag_map = _top_tags(tags, max_tags)
    items = items_frame(
        movies["movieId"],
        movies["title"],
        _split_categories(movies["genres"], "|"),
        [tag_map.get(int(i), []) for i in movies["movieId"]],
        overviews,
    )
    return Ingested(
        _events_from_movielens(ratings),
        items,
        {
            "events": {"file": str(ratings_path), "first_line": ratings_line},
            "items": {"file": str(movies_path), "first_line": movies_line},
        },
    )


def _parse_ml1m_movies(path: Path) -> pd.DataFrame:
    """movies.dat is latin-1 with '::' separators; titles contain ':' but never '::'."""
    rows = []
    for number, line in enumerate(read_text(path, "latin-1").splitlines(), start=1):
        fields = line.split("::")
        if len(fields) != 3:
            raise DataError(path, "field count", f"expected 3 '::'-separated fields, got {len(fields)}", line=number)
        rows.append(fields)
    frame = pd.DataFrame(rows, columns=["movieId", "title", "genres"])
    frame["movieId"] = to_numbers(frame["movieId"], path, "movieId", 1)
    return frame


def load_ml_1m(folder: Path, overviews: dict[int, str], max_tags: int) -> Ingested:
    del max_tags  # ml-1m has no tags
    ratings_path = folder / "ratings.dat"
    ratings, line = read_delimited(
        ratings_path,
        ["user_id", "item_id", "value", "timestamp"],
        sep="::",
        encoding="latin-1",
        header=False,
        numeric=["user_id", "item_id", "value", "timestamp"],
    )
    movies_path = folder / "movies.dat"
    movies = _parse_ml1m_movies(movies_path)
    items = items_frame(
        movies["movieId"], movies["title"], _split_categories(movies["genres"], "|"), None, overviews
    )
    return Ingested(
        _events_from_movielens(ratings),
        items,
        {
            "events": {"file": str(ratings_path), "first_line": line},
            "items": {"file": str(movies_path), "first_line": 1},
        },
    )


def load_ml_100k(folder: Path, overviews: dict[int, str], max_tags: int) -> Ingested:
    # ml-100k numbers its movies on its own; TMDB links (MovieLens ids) do not apply.
    del overviews, max_tags
    ratings_path = folder / "u.data"
    ratings, line = read_delimited(
        ratings_path,
        ["user_id", "item_id", "value", "timestamp"],
        sep="\t",
        encoding="latin-1",
        header=False,
        numeric=["user_id", "item_id", "value", "timestamp"],
    )
    genres, _ = read_delimited(folder / "u.genre", ["name", "index"], sep="|", encoding="latin-1", header=False)
    genre_names = list(genres["name"])
    item_path = folder / "u.item"
    fields = ["movieId", "title", "released", "video", "imdb", *genre_names]
    movies, item_line = read_delimited(
        item_path, fields, sep="|", encoding="latin-1", header=False, numeric=["movieId", *genre_names]
    )
    flags = movies[genre_names].fillna(0).astype(int).to_numpy()
    categories = [[g for g, on in zip(genre_names, row) if on and g != "unknown"] for row in flags]
    items = items_frame(movies["movieId"], movies["title"], categories)
    return Ingested(
        _events_from_movielens(ratings),
        items,
        {
            "events": {"file": str(ratings_path), "first_line": line},
            "items": {"file": str(item_path), "first_line": item_line},
        },
    )


def _read_table(path: Path, columns: list[str], cfg: TabularConfig, numeric: list[str],
                text: list[str]) -> tuple[pd.DataFrame, int | None]:
    try:
        if path.suffix == ".parquet":
            return select_columns(pd.read_parquet(path), path, columns, numeric, None), None
        return read_delimited(path, columns, sep=cfg.delimiter, encoding=cfg.encoding, numeric=numeric, text=text)
    except DataError as error:
        ids = {source: key for key, source in {**cfg.event_columns, **cfg.item_columns}.items() if key in ("user_id", "item_id")}
        if error.rule == "numeric" and error.column in ids:
            error.message += (f"; for ids that are not numbers set data.tabular.ids.{ids[error.column]}: str"
                              f" (decayrec validate: --ids {ids[error.column]}=str)")
            error.args = (str(error),)
        raise


def _id_columns(mapping: dict[str, str], cfg: TabularConfig, keys: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """The source columns of ``keys`` that must be numbers, and those read as written."""
    kinds = {k: getattr(cfg.ids, k) for k in keys if k in mapping}
    return [mapping[k] for k, kind in kinds.items() if kind == "int"], [mapping[k] for k, kind in kinds.items() if kind == "str"]


def load_events_file(path: Path, cfg: TabularConfig) -> tuple[pd.DataFrame, int | None]:
    """A user's event log (CSV or Parquet) mapped onto the canonical events table."""
    mapping = cfg.event_columns
    needed = ["user_id", "item_id", "timestamp"]
    absent = [k for k in needed if k not in mapping]
    if absent:
        raise DataError(path, "column mapping", f"the column mapping names no source column for {absent}")
    numeric, text = _id_columns(mapping, cfg, ("user_id", "item_id"))
    numeric += [mapping["value"]] if "value" in mapping else []
    if cfg.timestamp_format == "epoch_s":
        numeric.append(mapping["timestamp"])
    raw, line = _read_table(path, list(mapping.values()), cfg, numeric, text)
    if cfg.timestamp_format == "epoch_s":
        stamps = timestamps_from_epoch(raw[mapping["timestamp"]])
    else:
        stamps = pd.to_datetime(raw[mapping["timestamp"]], utc=True, errors="coerce", format="ISO8601")
    value = raw[mapping["value"]] if "value" in mapping else pd.Series(1.0, index=raw.index)
    event_type = raw[mapping["event_type"]].astype("string") if "event_type" in mapping else cfg.event_type
    return events_frame(raw[mapping["user_id"]], raw[mapping["item_id"]], value, stamps, event_type, cfg.ids), line


def load_items_file(path: Path, cfg: TabularConfig) -> tuple[pd.DataFrame, int | None]:
    """A user's catalogue mapped onto the canonical items table."""
    mapping = cfg.item_columns
    if "item_id" not in mapping or "title" not in mapping:
        raise DataError(path, "column mapping", "the item column mapping needs item_id and title")
    raw, line = _read_table(path, list(mapping.values()), cfg, *_id_columns(mapping, cfg, ("item_id",)))
    categories = (
        _split_categories(raw[mapping["categories"]], cfg.category_separator)
        if "categories" in mapping
        else [[] for _ in range(len(raw))]
    )
    overviews = None
    if "text" in mapping:
        overviews = {i: str(t) for i, t in zip(raw[mapping["item_id"]], raw[mapping["text"]]) if pd.notna(i) and pd.notna(t)}
    items = items_frame(raw[mapping["item_id"]], raw[mapping["title"]].astype("string"), categories, None, overviews,
                        cfg.ids.item_id)
    return items, line


def load_tabular(cfg: TabularConfig) -> Ingested:
    if cfg.events is None or cfg.items is None:
        raise DataError("params.yaml", "column mapping", "data.tabular.events and data.tabular.items must name files")
    events, events_line = load_events_file(Path(cfg.events), cfg)
    items, items_line = load_items_file(Path(cfg.items), cfg)
    return Ingested(
        events,
        items,
        {
            "events": {"file": str(cfg.events), "first_line": events_line},
            "items": {"file": str(cfg.items), "first_line": items_line},
        },
    )


MOVIELENS = {"ml-latest-small": load_ml_latest_small, "ml-1m": load_ml_1m, "ml-100k": load_ml_100k}


def ingest(cfg: DataConfig) -> Ingested:
    """Read the configured data set into canonical tables (nothing is written)."""
    if cfg.dataset in ("csv", "parquet"):
        return load_tabular(cfg.tabular)
    if cfg.dataset == "shop":
        from features import shop

        return shop.ingest(cfg.shop, cfg.tabular)
    folder = locate(
        cfg.dataset,
        bundled=cfg.bundled_dir,
        mirror=cfg.mirror,
        download_dir=cfg.download_dir,
        download=cfg.download,
    )
    overviews: dict[int, str] = {}
    tmdb = locate_optional("tmdb-5000", cfg.mirror) if cfg.tmdb == "auto" else None
    if tmdb is not None and cfg.dataset != "ml-100k":
        # links.csv of the bundled small set maps every MovieLens id space we read to TMDB.
        links = cfg.bundled_dir / "ml-latest-small" / "links.csv"
        overviews = tmdb_overviews(tmdb, links)
    return MOVIELENS[cfg.dataset](folder, overviews, cfg.max_tags_per_item)
