"""The pipeline steps end to end on real files: outputs, determinism, and failure safety."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from conftest import MIRROR, needs_mirror
from features.errors import ValidationFailed
from flows.config import TabularConfig
from flows.steps import ingest_step, split_step, validate_step


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def csv_params(params_for, ml_small_csv):
    tabular = TabularConfig(events=ml_small_csv["events"], items=ml_small_csv["items"])
    return params_for(dataset="csv", tabular=tabular)


def test_steps_write_validated_tables_and_every_split(csv_params):
    ingest_step(csv_params)
    summary = validate_step(csv_params)
    splits = split_step(csv_params)
    assert summary["events"] == 3000 and summary["quarantined"] == {}
    validated = pd.read_parquet(csv_params.validation.validated_dir / "events.parquet")
    assert validated["user_id"].dtype == "int64" and str(validated["timestamp"].dtype) == "datetime64[us, UTC]"
    for protocol in ("P0", "P1", "P2"):
        folder = csv_params.split.out_dir / protocol
        assert {p.name for p in folder.iterdir()} == {"train.parquet", "valid.parquet", "test.parquet", "stats.json"}
        assert json.loads((folder / "stats.json").read_text()) == json.loads(json.dumps(splits[protocol]))
    p1 = splits["P1"]
    assert (p1["train"]["rows"], p1["valid"]["rows"], p1["test"]["rows"]) == (1800, 600, 600)


def test_split_files_are_byte_identical_across_runs(csv_params):
    ingest_step(csv_params)
    validate_step(csv_params)
    split_step(csv_params)
    first = digest(csv_params.split.out_dir)
    split_step(csv_params)
    assert digest(csv_params.split.out_dir) == first


def test_failed_validation_writes_and_overwrites_nothing_downstream(csv_params, ml_small_csv):
    ingest_step(csv_params)
    validate_step(csv_params)
    split_step(csv_params)
    before = {d: digest(d) for d in (csv_params.validation.validated_dir, csv_params.split.out_dir)}

    path = ml_small_csv["events"]
    lines = path.read_text().splitlines()
    lines[4] = "," + lines[4].split(",", 1)[1]  # a null user id on line 5
    path.write_text("\n".join(lines) + "\n")
    ingest_step(csv_params)
    with pytest.raises(ValidationFailed, match="non-null"):
        validate_step(csv_params)

    assert {d: digest(d) for d in before} == before
    leftovers = [p.name for p in csv_params.validation.validated_dir.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_bundled_dataset_end_to_end(params_for):
    params = params_for()
    assert ingest_step(params)["events"] == 100_836
    validated = validate_step(params)
    assert (validated["events"], validated["users"], validated["items"]) == (100_836, 610, 9_742)
    assert split_step(params)["P2"]["test"]["rows"] == 610


@needs_mirror
def test_ml_1m_ingests_validates_and_splits_as_published(params_for):
    params = params_for(dataset="ml-1m", mirror=Path(MIRROR))
    ingest_step(params)
    validated = validate_step(params)
    assert (validated["events"], validated["users"]) == (1_000_209, 6_040)
    assert (validated["items"], validated["items_with_events"]) == (3_883, 3_706)
    splits = split_step(params)
    assert splits["P2"]["test"]["rows"] == 6_040
    assert splits["P1"]["test"]["evaluable_users"] == 1_143
    assert sum(splits["P0"][part]["rows"] for part in ("train", "valid", "test")) == 834_449


def test_profiles_step_loads_every_table_into_a_new_online_version(csv_params):
    from features.online import published
    from features.store import online_users, open_store
    from flows.steps import embed_step, features_step, profiles_step

    params = csv_params
    ingest_step(params)
    validate_step(params)
    summary = features_step(params)
    embed_step(params)
    loaded = profiles_step(params)
    assert loaded["online_project"] == published(params.features).project != params.features.store.project
    store_cfg = published(params.features)
    validated = pd.read_parquet(params.validation.validated_dir / "events.parquet")
    assert summary["user_interest"] >= validated["user_id"].nunique()
    users = sorted(validated["user_id"].unique())
    online = online_users(open_store(store_cfg), users)
    last = validated.groupby("user_id")["timestamp"].max().sort_index()
    expected = (last.dt.tz_localize(None).to_numpy("datetime64[us]").astype("int64") // 1_000_000).tolist()
    assert online["last_event_s"].tolist() == expected


def test_a_split_with_few_evaluable_users_is_a_warning_in_the_log_and_the_run_summary(csv_params, caplog):
    from flows.cli import format_summary

    params = csv_params.model_copy(update={"split": csv_params.split.model_copy(update={"min_evaluable_users": 10_000})})
    ingest_step(params)
    validated = validate_step(params)
    splits = split_step(params)
    evaluable = splits["P1"]["test"]["evaluable_users"]
    assert f"P1 test: only {evaluable:,} evaluable users (split.min_evaluable_users is 10000)" in caplog.text
    printed = format_summary(params, validated, splits, 1.0)
    assert printed.count("warning:") == 6 and f"warning: P1 test: only {evaluable:,} evaluable users" in printed
    calm = params.model_copy(update={"split": params.split.model_copy(update={"min_evaluable_users": 0})})
    assert "warning:" not in format_summary(calm, validated, splits, 1.0)


def test_the_shop_profile_extends_params_and_its_log_validates(tmp_path):
    """params.shop.yaml: params.yaml's settings under its own, outputs in the shop's own
    folders; a smaller shop of the same kind ingests and validates with them."""
    import yaml

    from conftest import ROOT
    from flows.config import load_params

    shop = load_params(ROOT / "params.shop.yaml")
    base = load_params(ROOT / "params.yaml")
    assert shop.data.dataset == "shop" and shop.data.ids.user_id == "str" and shop.train.scorer == base.train.scorer
    assert str(shop.validation.validated_dir) == "data/datasets/shop/validated" and shop.features.store.project == "decayrec_shop"
    assert shop.serving.bento_name == "decayrec-shop"  # a shop run never moves decayrec:latest
    raw = yaml.safe_load((ROOT / "params.shop.yaml").read_text())
    profile = tmp_path / "params.shop.yaml"
    raw["extends"] = str(ROOT / "params.yaml")
    raw["data"]["shop"].update(customers=150, products=60)
    profile.write_text(yaml.safe_dump(raw))
    params = load_params(profile)
    folders = {"interim_dir": tmp_path / "interim"}
    params = params.model_copy(update={
        "data": params.data.model_copy(update=folders),
        "validate_": params.validation.model_copy(update={"validated_dir": tmp_path / "validated", "docs_dir": tmp_path / "docs"}),
    })
    ingest_step(params)
    summary = validate_step(params)
    assert summary["users"] == 150 and summary["events"] > 1000
    events = pd.read_parquet(tmp_path / "validated" / "events.parquet")
    assert set(events["event_type"]) == {"view", "add_to_cart", "purchase"} and events["user_id"].iloc[0].startswith("C")
