"""The Great Expectations suites on small real data: pass, fail with examples, quarantine."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest

from features.adapters import Ingested, load_events_file, load_items_file
from features.errors import ValidationFailed
from features.validation import validate_tables
from flows.config import TabularConfig, ValidationConfig

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.fixture
def ingested(ml_small_csv) -> Ingested:
    cfg = TabularConfig(events=ml_small_csv["events"], items=ml_small_csv["items"])
    events, events_line = load_events_file(cfg.events, cfg)
    items, items_line = load_items_file(cfg.items, cfg)
    sources = {
        "events": {"file": str(cfg.events), "first_line": events_line},
        "items": {"file": str(cfg.items), "first_line": items_line},
    }
    return Ingested(events, items, sources)


@pytest.fixture
def rules(tmp_path: Path) -> ValidationConfig:
    return ValidationConfig(min_events=100, docs_dir=tmp_path / "docs")


def test_clean_data_passes_untouched(ingested, rules):
    validated = validate_tables(ingested, rules, NOW)
    assert len(validated.events) == 3000
    assert len(validated.items) == 9742
    assert validated.quarantined == {}
    pd.testing.assert_frame_equal(validated.events, ingested.events)


def break_rows(ingested: Ingested) -> Ingested:
    events = ingested.events.copy()
    events.loc[3, "user_id"] = pd.NA
    events.loc[5, "value"] = 9.0
    events.loc[8, "item_id"] = 99_999_999
    events = pd.concat([events, events.iloc[[10]]], ignore_index=True)
    return Ingested(events, ingested.items, ingested.sources)


def test_failure_lists_every_rule_with_lines_and_writes_data_docs(ingested, rules):
    with pytest.raises(ValidationFailed) as caught:
        validate_tables(break_rows(ingested), rules, NOW)
    failed = {p.rule: p for p in caught.value.problems}
    assert set(failed) == {"non-null", "value in [0.5, 5.0]", "item in catalogue", "no duplicate events"}
    assert failed["non-null"].examples == [{"row": 3, "line": 5, "user_id": pd.NA}]
    assert failed["value in [0.5, 5.0]"].examples[0]["line"] == 7
    # Both copies of a duplicate are shown; the repeat sits at the end of the file.
    assert [e["line"] for e in failed["no duplicate events"].examples] == [12, 3002]
    docs = Path(caught.value.docs.removeprefix("file://"))
    assert docs.is_file() and "events_suite" in docs.read_text()


def test_quarantine_moves_few_bad_rows_aside_with_reasons(ingested, rules):
    lenient = rules.model_copy(update={"quarantine": True, "max_quarantine_fraction": 0.01})
    validated = validate_tables(break_rows(ingested), lenient, NOW)
    quarantined = validated.quarantined["events"]
    assert sorted(zip(quarantined["row"], quarantined["reason"])) == [
        (3, "non-null"),
        (5, "value in [0.5, 5.0]"),
        (8, "item in catalogue"),
        (3000, "no duplicate events"),  # the first copy (row 10) is kept
    ]
    assert len(validated.events) == 3001 - 4


def test_quarantine_refuses_when_too_many_rows_are_bad(ingested, rules):
    events = ingested.events.copy()
    events.loc[:99, "value"] = 9.0  # 100 of 3000 rows: 3.3% > 1%
    strict = rules.model_copy(update={"quarantine": True, "max_quarantine_fraction": 0.01})
    with pytest.raises(ValidationFailed) as caught:
        validate_tables(Ingested(events, ingested.items, ingested.sources), strict, NOW)
    assert "quarantine at most 1.00% of rows" in caught.value.summary()


def test_table_level_failures_cannot_be_quarantined(ingested, rules):
    lenient = rules.model_copy(update={"quarantine": True, "min_events": 10_000})
    with pytest.raises(ValidationFailed) as caught:
        validate_tables(ingested, lenient, NOW)
    assert [p.rule for p in caught.value.problems] == ["at least 10000 events"]


def test_missing_column_is_reported_by_the_suite(ingested, rules):
    events = ingested.events.drop(columns=["value"])
    with pytest.raises(ValidationFailed) as caught:
        validate_tables(Ingested(events, ingested.items, ingested.sources), rules, NOW)
    assert ("required column", "value") in {(p.rule, p.column) for p in caught.value.problems}


def test_duplicate_item_ids_fail_the_items_suite(ingested, rules):
    items = pd.concat([ingested.items, ingested.items.iloc[[0]]], ignore_index=True)
    with pytest.raises(ValidationFailed) as caught:
        validate_tables(Ingested(ingested.events, items, ingested.sources), rules, NOW)
    assert caught.value.table == "items"
    assert [p.rule for p in caught.value.problems] == ["unique item ids"]


def test_an_id_column_mixing_strings_and_numbers_names_the_rows(tmp_path, rules):
    """Under string ids, a number among the strings (a table handed over in memory: CSV has
    only text, Parquet one type per column) is a rule failure naming its row."""
    from flows.config import IdsConfig

    cfg = TabularConfig(ids=IdsConfig(user_id="str", item_id="str"), event_columns={
        "user_id": "customer", "item_id": "sku", "value": "qty", "timestamp": "ts"}, item_columns={"item_id": "sku", "title": "name"})
    n = 120
    pd.DataFrame({"customer": [f"C{i % 30:05d}" for i in range(n)], "sku": [f"SKU-{i % 12}" for i in range(n)],
                  "qty": [1.0] * n, "ts": [1.6e9 + 60 * i for i in range(n)]}).to_parquet(tmp_path / "events.parquet")
    pd.DataFrame({"sku": [f"SKU-{i}" for i in range(12)], "name": [f"Item {i}" for i in range(12)]}).to_parquet(tmp_path / "items.parquet")
    events, _ = load_events_file(tmp_path / "events.parquet", cfg)
    items, _ = load_items_file(tmp_path / "items.parquet", cfg)
    events.loc[7, "user_id"] = 17
    strict = rules.model_copy(update={"value_min": 1.0})
    with pytest.raises(ValidationFailed) as caught:
        validate_tables(Ingested(events, items, {"events": {"file": "events.parquet"}}), strict, NOW)
    [problem] = caught.value.problems
    assert (problem.rule, problem.column, problem.count) == ("string ids", "user_id", 1)
    assert problem.examples == [{"row": 7, "user_id": 17}]
    assert "events.parquet" in str(caught.value) and "string ids" in str(caught.value)
    events.loc[7, "user_id"] = "C00017"
    validated = validate_tables(Ingested(events, items, {}), strict, NOW)
    assert validated.events["user_id"].iloc[7] == "C00017"


def shop_log(tmp_path: Path, rows: list[str], header: str = "customer,sku,event,qty,ts") -> Ingested:
    """A shop's event log (string ids, ISO times) and its catalogue, ingested."""
    from flows.config import IdsConfig

    events = tmp_path / "events.csv"
    events.write_text(header + "\n" + "\n".join(rows) + "\n")
    items = tmp_path / "products.csv"
    items.write_text("sku,name\n" + "\n".join(f"SKU-{i},Product {i}" for i in range(12)) + "\n")
    columns = dict(zip(("user_id", "item_id", "event_type", "value", "timestamp"), header.split(",")))
    if "qty" not in header:
        columns = {"user_id": "customer", "item_id": "sku", "event_type": "event", "timestamp": "ts"}
    cfg = TabularConfig(ids=IdsConfig(user_id="str", item_id="str"), timestamp_format="iso", event_columns=columns,
                        item_columns={"item_id": "sku", "title": "name"})
    frame, line = load_events_file(events, cfg)
    catalogue, _ = load_items_file(items, cfg)
    return Ingested(frame, catalogue, {"events": {"file": str(events), "first_line": line}})


def funnel(n: int = 120, qty: int = 1) -> list[str]:
    kinds = ["view", "add_to_cart", "purchase"]
    return [f"C{i % 30:05d},SKU-{i % 12},{kinds[i % 3]},{qty},2025-03-01T{i // 60:02d}:{i % 60:02d}:00+01:00" for i in range(n)]


SHOP_TYPES = ["add_to_cart", "purchase", "view"]


def test_an_event_type_the_features_do_not_weigh_is_named_with_its_rows(tmp_path, rules):
    rows = funnel()
    rows[4] = rows[4].replace("add_to_cart", "wishlist")
    with pytest.raises(ValidationFailed) as caught:
        validate_tables(shop_log(tmp_path, rows), rules.model_copy(update={"value_max": 10}), NOW, SHOP_TYPES)
    [problem] = caught.value.problems
    assert problem.rule == "event type in features.event_weights (add_to_cart, purchase, view)"
    assert problem.column == "event_type" and problem.examples == [{"row": 4, "line": 6, "event_type": "wishlist"}]
    assert "events.csv" in str(caught.value)


def test_each_event_type_has_its_own_value_range(tmp_path, rules):
    """Ratings-like views in [1, 5], purchase quantities up to 1000: a purchase of 600 passes,
    a view of 600 does not, and a purchase of 2000 does not."""
    rows = funnel()
    rows[2] = rows[2].replace(",purchase,1,", ",purchase,600,")
    cfg = rules.model_copy(update={"value_min": 1.0, "value_max": 5.0, "value_ranges": {"purchase": (1.0, 1000.0)}})
    validated = validate_tables(shop_log(tmp_path, rows), cfg, NOW, SHOP_TYPES)
    assert validated.events["value"].max() == 600
    rows[0] = rows[0].replace(",view,1,", ",view,600,")
    rows[5] = rows[5].replace(",purchase,1,", ",purchase,2000,")
    with pytest.raises(ValidationFailed) as caught:
        validate_tables(shop_log(tmp_path, rows), cfg, NOW, SHOP_TYPES)
    failed = {p.rule: p for p in caught.value.problems}
    assert set(failed) == {"purchase value in [1, 1000]", "value in [1.0, 5.0]"}
    assert [e["row"] for e in failed["purchase value in [1, 1000]"].examples] == [5]
    assert [e["row"] for e in failed["value in [1.0, 5.0]"].examples] == [0]


def test_a_log_without_a_value_column_is_implicit_feedback(tmp_path, rules):
    rows = [",".join(r.split(",")[:3] + r.split(",")[4:]) for r in funnel()]
    validated = validate_tables(shop_log(tmp_path, rows, header="customer,sku,event,ts"), rules, NOW, SHOP_TYPES)
    assert len(validated.events) == 120 and validated.events["value"].eq(1.0).all()
