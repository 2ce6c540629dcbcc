"""Data Docs keep past runs (up to ``validate.docs_keep_runs``) and their index reads with no
network: its tables are written as HTML, not only drawn by scripts from CDNs."""
from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

from features.validation import validate_tables
from flows.config import ValidationConfig

SITE = Path("gx") / "uncommitted" / "data_docs" / "local_site"


@pytest.fixture()
def ingested(ml_small_csv):
    from features.adapters import Ingested, load_events_file, load_items_file
    from flows.config import TabularConfig

    cfg = TabularConfig()
    events, first = load_events_file(ml_small_csv["events"], cfg)
    items, items_first = load_items_file(ml_small_csv["items"], cfg)
    return Ingested(events, items, {"events": {"file": str(ml_small_csv["events"]), "first_line": first},
                                    "items": {"file": str(ml_small_csv["items"]), "first_line": items_first}})


def rows_of(index: Path) -> list[str]:
    """The validation result links the index holds as plain HTML (what a browser shows
    with scripts and CDNs out of reach)."""
    page = index.read_text()
    table = re.search(r"<table\s+id=\"[\w-]+\"[^>]*ge-index-page-validation-results-table.*?</table>", page, re.S)
    assert table, "no validation results table"
    body = re.search(r"<tbody>.*?</tbody>", table[0], re.S)
    assert body, "the table has no rows written in HTML"
    return re.findall(r"<a href=\"(validations/[^\"]+)\"", body[0])


def test_runs_accumulate_in_the_index_up_to_the_limit_with_static_rows(ingested, tmp_path):
    cfg = ValidationConfig(min_events=100, docs_dir=tmp_path / "docs", docs_keep_runs=2)
    for run in range(3):
        validated = validate_tables(ingested, cfg, run_name=f"run {run}")
    index = tmp_path / "docs" / SITE / "index.html"
    assert validated.docs == index.as_uri()
    links = rows_of(index)
    assert len(links) == 4  # two suites x the two newest runs
    assert all((index.parent / unquote(link)).is_file() for link in links)
    page = index.read_text()
    assert "run 2" in page and "run 1" in page and "run 0" not in page
    assert page.count('class="ge-offline-status">passed<') == 4
    stored = list((tmp_path / "docs" / "gx" / "uncommitted" / "validations").glob("*/*/*"))
    assert len(stored) == 4


def test_a_failed_run_is_kept_beside_the_passed_ones(ingested, tmp_path):
    from features.errors import ValidationFailed

    cfg = ValidationConfig(min_events=100, docs_dir=tmp_path / "docs")
    validate_tables(ingested, cfg, run_name="good")
    ingested.events.loc[3, "value"] = 9.0
    with pytest.raises(ValidationFailed):
        validate_tables(ingested, cfg, run_name="bad")
    page = (tmp_path / "docs" / SITE / "index.html").read_text()
    assert page.count('class="ge-offline-status">failed<') == 1 and page.count('class="ge-offline-status">passed<') == 3
