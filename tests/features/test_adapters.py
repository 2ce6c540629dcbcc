"""Source adapters: MovieLens sets (bundled and mirrored), TMDB text, and users' own files."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT, needs_mirror

from features.adapters import NO_GENRE, Ingested, ingest, load_events_file, load_items_file, load_tabular
from features.contract import EVENT_COLUMNS, ITEM_COLUMNS, TIMESTAMP_DTYPE, item_text
from features.errors import DataError
from flows.config import DataConfig, TabularConfig, load_params

TOY_STORY_OVERVIEW = (
    "Led by Woody, Andy's toys live happily in his room until Andy's birthday brings Buzz Lightyear "
    "onto the scene. Afraid of losing his place in Andy's heart, Woody plots against Buzz. But when "
    "circumstances separate Buzz and Woody from their owner, the duo eventually learns to put aside "
    "their differences."
)


def data_config(**update) -> DataConfig:
    """params.yaml's data section, reading the repo's bundled copy and never downloading."""
    base = load_params(ROOT / "params.yaml").data
    return base.model_copy(
        update={"bundled_dir": ROOT / "data" / "raw", "mirror": None, "download": False, **update}
    )


def mirror_config(dataset: str, **update) -> DataConfig:
    return data_config(dataset=dataset, mirror=Path(os.environ["DECAYREC_DATA_MIRROR"]), **update)


def item(items: pd.DataFrame, item_id: int) -> dict:
    rows = items[items["item_id"] == item_id].to_dict("records")
    assert len(rows) == 1, f"item {item_id} appears {len(rows)} times"
    return rows[0]


def assert_canonical(ingested: Ingested) -> None:
    events, items = ingested.events, ingested.items
    assert list(events.columns) == EVENT_COLUMNS
    assert {c: str(t) for c, t in events.dtypes.items()} == {
        "user_id": "Int64",
        "item_id": "Int64",
        "event_type": "string",
        "value": "Float64",
        "timestamp": TIMESTAMP_DTYPE,
    }
    assert list(items.columns) == ITEM_COLUMNS
    assert {c: str(t) for c, t in items.dtypes.items()} == {
        "item_id": "Int64",
        "title": "string",
        "year": "Int64",
        "categories": "object",
        "tags": "object",
        "text": "string",
    }
    assert items["categories"].map(type).eq(list).all()
    assert items["tags"].map(type).eq(list).all()


# ---------------------------------------------------------------- bundled ml-latest-small


@pytest.fixture(scope="module")
def small() -> Ingested:
    return ingest(data_config(dataset="ml-latest-small"))


def test_bundled_small_counts(small):
    events, items = small.events, small.items
    assert len(events) == 100_836
    assert events["user_id"].nunique() == 610
    assert len(items) == 9_742
    assert events["item_id"].nunique() == 9_724
    assert items["item_id"].is_unique
    assert set(events["event_type"]) == {"rating"}
    assert sorted(events["value"].unique()) == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0]


def test_bundled_small_is_canonical(small):
    assert_canonical(small)
    assert small.sources == {
        "events": {"file": str(ROOT / "data/raw/ml-latest-small/ratings.csv"), "first_line": 2},
        "items": {"file": str(ROOT / "data/raw/ml-latest-small/movies.csv"), "first_line": 2},
    }


def test_bundled_small_timestamps_are_utc_and_in_the_published_span(small):
    stamps = small.events["timestamp"]
    assert str(stamps.dt.tz) == "UTC"
    assert stamps.min() == pd.Timestamp("1996-03-29 18:36:55", tz="UTC")
    assert stamps.max() == pd.Timestamp("2018-09-24 14:27:30", tz="UTC")
    # ratings.csv line 2: 1,1,4.0,964982703
    first = small.events.iloc[0]
    assert (first["user_id"], first["item_id"], first["value"]) == (1, 1, 4.0)
    assert first["timestamp"] == pd.Timestamp(964982703, unit="s", tz="UTC")


def test_bundled_small_item_text_has_genres_and_tags(small):
    toy = item(small.items, 1)
    assert toy["title"] == "Toy Story (1995)"
    assert toy["year"] == 1995
    assert toy["categories"] == ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]
    # tags.csv: 'pixar' twice, 'fun' once: most used first
    assert toy["tags"] == ["pixar", "fun"]
    assert toy["text"] == "Toy Story (1995) Genres: Adventure, Animation, Children, Comedy, Fantasy. Tags: pixar, fun."
    assert "pixar" in toy["text"]
    assert small.items["tags"].map(len).max() == 20  # max_tags_per_item
    assert small.items["tags"].map(len).gt(0).sum() == 1_572


def test_bundled_small_no_genres_listed_is_an_empty_list(small):
    no_genre = small.items[small.items["categories"].map(len) == 0]
    assert len(no_genre) == 34
    cravate = item(small.items, 114335)
    assert cravate["categories"] == []
    assert cravate["text"] == "La cravate (1957)"
    assert not small.items["text"].str.contains(NO_GENRE, regex=False).any()


def test_bundled_small_accented_titles_are_intact(small):
    assert item(small.items, 73)["title"] == "Misérables, Les (1995)"
    assert item(small.items, 73)["text"] == "Misérables, Les (1995) Genres: Drama, War."
    assert not small.items["title"].str.contains("Ã", regex=False).any()  # no mojibake


def test_bundled_small_without_mirror_has_no_tmdb_text(small):
    assert TOY_STORY_OVERVIEW not in item(small.items, 1)["text"]


# ---------------------------------------------------------------- mirrored MovieLens sets


@pytest.fixture(scope="module")
def ml1m() -> Ingested:
    return ingest(mirror_config("ml-1m", tmdb="auto"))


@pytest.fixture(scope="module")
def ml100k() -> Ingested:
    return ingest(mirror_config("ml-100k", tmdb="auto"))


@needs_mirror
def test_ml1m_counts_and_span(ml1m):
    events, items = ml1m.events, ml1m.items
    assert_canonical(ml1m)
    assert len(events) == 1_000_209
    assert events["user_id"].nunique() == 6_040
    assert len(items) == 3_883
    assert events["item_id"].nunique() == 3_706
    assert sorted(events["value"].unique()) == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert events["timestamp"].min() == pd.Timestamp("2000-04-25 23:05:32", tz="UTC")
    assert events["timestamp"].max() == pd.Timestamp("2003-02-28 17:49:50", tz="UTC")
    mirror = Path(os.environ["DECAYREC_DATA_MIRROR"])
    assert ml1m.sources == {
        "events": {"file": str(mirror / "ml-1m/ratings.dat"), "first_line": 1},
        "items": {"file": str(mirror / "ml-1m/movies.dat"), "first_line": 1},
    }


@needs_mirror
def test_ml1m_latin1_titles_are_decoded(ml1m):
    # movies.dat lines 567 and 1102, bytes 0xe5 and 0xe8 in latin-1
    assert item(ml1m.items, 570)["title"] == "Slingshot, The (Kådisbellan ) (1993)"
    assert item(ml1m.items, 1117)["title"] == "Eighth Day, The (Le Huitième jour ) (1996)"
    assert item(ml1m.items, 73)["title"] == "Misérables, Les (1995)"
    assert not ml1m.items["title"].str.contains("Ã", regex=False).any()


@needs_mirror
def test_ml1m_titles_with_colons_and_genres(ml1m):
    star_wars = item(ml1m.items, 260)
    assert star_wars["title"] == "Star Wars: Episode IV - A New Hope (1977)"
    assert star_wars["year"] == 1977
    assert star_wars["categories"] == ["Action", "Adventure", "Fantasy", "Sci-Fi"]
    assert star_wars["tags"] == []


@needs_mirror
def test_ml100k_counts_and_genres_from_u_genre(ml100k):
    events, items = ml100k.events, ml100k.items
    assert_canonical(ml100k)
    assert len(events) == 100_000
    assert events["user_id"].nunique() == 943
    assert len(items) == 1_682
    assert events["item_id"].nunique() == 1_682
    assert events["timestamp"].min() == pd.Timestamp("1997-09-20 03:05:10", tz="UTC")
    assert events["timestamp"].max() == pd.Timestamp("1998-04-22 23:10:38", tz="UTC")
    assert item(items, 1)["categories"] == ["Animation", "Children's", "Comedy"]
    assert item(items, 2)["categories"] == ["Action", "Adventure", "Thriller"]
    # u.genre lists 19 names; 'unknown' is a flag, not a genre
    assert sorted({c for cats in items["categories"] for c in cats}) == [
        "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
        "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War",
        "Western",
    ]
    assert sorted(items.loc[items["categories"].map(len) == 0, "item_id"]) == [267, 1373]
    assert item(items, 1005)["title"] == "Double vie de Véronique, La (Double Life of Veronique, The) (1991)"


@needs_mirror
def test_tmdb_overview_joins_ml_latest_small():
    ingested = ingest(mirror_config("ml-latest-small", tmdb="auto"))
    toy = item(ingested.items, 1)
    assert toy["text"] == (
        "Toy Story (1995) Genres: Adventure, Animation, Children, Comedy, Fantasy. Tags: pixar, fun. "
        + TOY_STORY_OVERVIEW
    )
    # README: overviews exist for 3,537 ml-latest-small movies
    assert ingested.items["text"].str.len().gt(
        ingested.items.apply(lambda r: len(item_text(r["title"], r["categories"], r["tags"], None)), axis=1)
    ).sum() == 3_537


@needs_mirror
def test_tmdb_overview_off_is_off():
    ingested = ingest(mirror_config("ml-latest-small", tmdb="off"))
    assert TOY_STORY_OVERVIEW not in item(ingested.items, 1)["text"]


@needs_mirror
def test_tmdb_overview_reaches_ml1m_through_shared_ids(ml1m):
    assert item(ml1m.items, 1)["text"] == "Toy Story (1995) Genres: Animation, Children's, Comedy. " + TOY_STORY_OVERVIEW


@needs_mirror
def test_ml100k_gets_no_tmdb_text(ml100k):
    # the fixture asks for tmdb: auto, and the mirror has tmdb-5000/
    assert (Path(os.environ["DECAYREC_DATA_MIRROR"]) / "tmdb-5000").is_dir()
    assert item(ml100k.items, 1)["text"] == "Toy Story (1995) Genres: Animation, Children's, Comedy."
    expected = [
        item_text(title, cats, tags, None)
        for title, cats, tags in zip(ml100k.items["title"], ml100k.items["categories"], ml100k.items["tags"])
    ]
    assert ml100k.items["text"].tolist() == expected


# ---------------------------------------------------------------- users' own files


MINE = {"user_id": "who", "item_id": "what", "value": "stars", "timestamp": "when"}


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_with_column_mapping_and_iso_timestamps(tmp_path):
    events = write(
        tmp_path / "log.csv",
        "when;who;what;stars;note\n"
        "2021-03-04T05:06:07+00:00;7;100;4.5;a\n"
        "2021-03-04T07:06:08+02:00;7;101;3;b\n"
        "2022-12-31T23:59:59+00:00;8;100;1;c\n",
    )
    cfg = TabularConfig(delimiter=";", event_columns=MINE, timestamp_format="iso")
    frame, first_line = load_events_file(events, cfg)
    assert first_line == 2
    assert list(frame.columns) == EVENT_COLUMNS
    assert str(frame["timestamp"].dtype) == TIMESTAMP_DTYPE
    assert frame["user_id"].tolist() == [7, 7, 8]
    assert frame["item_id"].tolist() == [100, 101, 100]
    assert frame["value"].tolist() == [4.5, 3.0, 1.0]
    assert frame["event_type"].tolist() == ["rating"] * 3
    assert frame["timestamp"].tolist() == [
        pd.Timestamp("2021-03-04 05:06:07", tz="UTC"),
        pd.Timestamp("2021-03-04 05:06:08", tz="UTC"),  # +02:00 converted to UTC
        pd.Timestamp("2022-12-31 23:59:59", tz="UTC"),
    ]


def test_iso_timestamps_without_offset_are_utc(tmp_path):
    events = write(tmp_path / "log.csv", "who,what,stars,when\n1,2,3,2020-01-02T03:04:05\n1,3,4,2020-01-03T00:00:00\n")
    frame, _ = load_events_file(events, TabularConfig(event_columns=MINE, timestamp_format="iso"))
    assert frame["timestamp"].tolist() == [
        pd.Timestamp("2020-01-02 03:04:05", tz="UTC"),
        pd.Timestamp("2020-01-03 00:00:00", tz="UTC"),
    ]


def test_iso_timestamps_with_and_without_fractional_seconds(tmp_path):
    events = write(
        tmp_path / "log.csv",
        "who,what,stars,when\n1,2,3,2020-01-02T03:04:05+00:00\n1,3,4,2020-01-02T03:04:06.250000+00:00\n",
    )
    frame, _ = load_events_file(events, TabularConfig(event_columns=MINE, timestamp_format="iso"))
    assert frame["timestamp"].tolist() == [
        pd.Timestamp("2020-01-02 03:04:05", tz="UTC"),
        pd.Timestamp("2020-01-02 03:04:06.25", tz="UTC"),
    ]


def test_parquet_events_and_items(tmp_path):
    events = tmp_path / "events.parquet"
    pd.DataFrame(
        {
            "uid": [1, 1, 2],
            "iid": [10, 11, 10],
            "score": [5.0, 2.5, 4.0],
            "ts": [964982703, 964982224, 1445714835],
            "ignored": ["x", "y", "z"],
        }
    ).to_parquet(events, index=False)
    items = tmp_path / "items.parquet"
    pd.DataFrame(
        {
            "id": [10, 11],
            "name": ["Heat (1995)", "Amélie (2001)"],
            "genres": ["Action|Crime", "(no genres listed)"],
            "blurb": ["A heist.", None],
        }
    ).to_parquet(items, index=False)
    cfg = TabularConfig(
        events=events,
        items=items,
        event_columns={"user_id": "uid", "item_id": "iid", "value": "score", "timestamp": "ts"},
        item_columns={"item_id": "id", "title": "name", "categories": "genres", "text": "blurb"},
    )
    ingested = load_tabular(cfg)
    assert ingested.sources == {
        "events": {"file": str(events), "first_line": None},
        "items": {"file": str(items), "first_line": None},
    }
    assert_canonical(ingested)
    ev = ingested.events
    assert ev["user_id"].tolist() == [1, 1, 2]
    assert ev["item_id"].tolist() == [10, 11, 10]
    assert ev["value"].tolist() == [5.0, 2.5, 4.0]
    assert ev["timestamp"].tolist() == [
        pd.Timestamp("2000-07-30 18:45:03", tz="UTC"),
        pd.Timestamp("2000-07-30 18:37:04", tz="UTC"),
        pd.Timestamp("2015-10-24 19:27:15", tz="UTC"),
    ]
    it = ingested.items
    assert it["title"].tolist() == ["Heat (1995)", "Amélie (2001)"]
    assert it["year"].tolist() == [1995, 2001]
    assert it["categories"].tolist() == [["Action", "Crime"], []]
    assert it["text"].tolist() == ["Heat (1995) Genres: Action, Crime. A heist.", "Amélie (2001)"]


def test_parquet_with_a_non_numeric_id_names_the_column(tmp_path):
    events = tmp_path / "events.parquet"
    pd.DataFrame({"userId": ["1", "u2"], "movieId": [1, 2], "rating": [4.0, 3.0], "timestamp": [1e9, 1e9]}).to_parquet(events)
    with pytest.raises(DataError) as caught:
        load_events_file(events, TabularConfig())
    err = caught.value
    assert (err.rule, err.column, err.row, err.line) == ("numeric", "userId", 1, None)
    assert "'u2'" in err.message


def test_a_string_id_in_an_integer_id_column_says_how_to_keep_strings(tmp_path):
    events = write(tmp_path / "log.csv", "userId,movieId,rating,timestamp\n1,5,4,1600000000\nC00390,6,3,1600000060\n")
    with pytest.raises(DataError) as caught:
        load_events_file(events, TabularConfig())
    err = caught.value
    assert (err.rule, err.column, err.row, err.line) == ("numeric", "userId", 1, 3)
    assert "'C00390' is not a number" in err.message and "data.tabular.ids.user_id: str" in str(err)


def test_string_ids_are_kept_as_written_leading_zeros_and_all(tmp_path):
    from flows.config import IdsConfig

    cfg = TabularConfig(ids=IdsConfig(user_id="str", item_id="str"))
    events = write(tmp_path / "log.csv", "userId,movieId,rating,timestamp\n007,SKU-1,4,1600000000\nC00390,0042,3,1600000060\n")
    frame, _ = load_events_file(events, cfg)
    assert frame["user_id"].tolist() == ["007", "C00390"] and frame["item_id"].tolist() == ["SKU-1", "0042"]
    items = write(tmp_path / "items.csv", "movieId,title,genres\nSKU-1,Tea,Drinks\n0042,Cup,Kitchen\n")
    catalogue, _ = load_items_file(items, cfg)
    assert catalogue["item_id"].tolist() == ["SKU-1", "0042"]


def test_event_type_column(tmp_path):
    events = write(
        tmp_path / "log.csv",
        "userId,movieId,kind,timestamp\n1,5,click,1600000000\n1,6,purchase,1600000060\n2,5,click,1600000120\n",
    )
    cfg = TabularConfig(
        event_columns={"user_id": "userId", "item_id": "movieId", "event_type": "kind", "timestamp": "timestamp"}
    )
    frame, _ = load_events_file(events, cfg)
    assert str(frame["event_type"].dtype) == "string"
    assert frame["event_type"].tolist() == ["click", "purchase", "click"]
    assert frame["value"].tolist() == [1.0, 1.0, 1.0]


def test_missing_value_column_gives_one(tmp_path):
    events = write(tmp_path / "log.csv", "userId,movieId,timestamp\n1,5,1600000000\n2,6,1600000001\n")
    cfg = TabularConfig(
        event_columns={"user_id": "userId", "item_id": "movieId", "timestamp": "timestamp"}, event_type="view"
    )
    frame, _ = load_events_file(events, cfg)
    assert str(frame["value"].dtype) == "Float64"
    assert frame["value"].tolist() == [1.0, 1.0]
    assert frame["event_type"].tolist() == ["view", "view"]
    assert frame["timestamp"].tolist() == [
        pd.Timestamp("2020-09-13 12:26:40", tz="UTC"),
        pd.Timestamp("2020-09-13 12:26:41", tz="UTC"),
    ]


def test_mapping_without_user_id_is_a_column_mapping_error(tmp_path):
    events = write(tmp_path / "log.csv", "userId,movieId,timestamp\n1,5,1600000000\n")
    cfg = TabularConfig(event_columns={"item_id": "movieId", "timestamp": "timestamp"})
    with pytest.raises(DataError) as caught:
        load_events_file(events, cfg)
    assert caught.value.rule == "column mapping"
    assert caught.value.file == str(events)
    assert "['user_id']" in caught.value.message


def test_item_mapping_without_title_is_a_column_mapping_error(tmp_path):
    items = write(tmp_path / "items.csv", "movieId,title\n1,A\n")
    with pytest.raises(DataError) as caught:
        load_items_file(items, TabularConfig(item_columns={"item_id": "movieId"}))
    assert caught.value.rule == "column mapping"


def test_tabular_without_files_is_a_column_mapping_error():
    with pytest.raises(DataError) as caught:
        load_tabular(TabularConfig())
    assert caught.value.rule == "column mapping"
    assert caught.value.file == "params.yaml"


def test_csv_dataset_goes_through_ingest(ml_small_csv):
    cfg = data_config(dataset="csv", tabular=TabularConfig(events=ml_small_csv["events"], items=ml_small_csv["items"]))
    ingested = ingest(cfg)
    assert len(ingested.events) == 3_000
    assert len(ingested.items) == 9_742
    assert ingested.sources["events"] == {"file": str(ml_small_csv["events"]), "first_line": 2}
    # the bundled movies.csv's categories column is read with the default '|' separator
    assert item(ingested.items, 1)["categories"] == ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]
