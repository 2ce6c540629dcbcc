"""Evaluation end to end on synthetic drifting users: protocols, tuning, segments, report."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from features.splits import split_p1, split_p2
from features.synthetic import SyntheticConfig, make_drift_dataset
from flows.config import EvaluateConfig
from models.evaluate import context, evaluate_protocol, grid
from models.lm_score import ItemVectors
from models.protocols import Task, encode, tasks
from models.report import write_report


@pytest.fixture(scope="module")
def drift():
    return make_drift_dataset(SyntheticConfig(n_users=120, n_items=150, events_per_user=40, seed=3))


def config(**models) -> EvaluateConfig:
    return EvaluateConfig(models=models, k=[10, 20], score_batch=50)


def frame(rows: list[tuple[int, int, int]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": np.array([r[0] for r in rows], dtype="int64"),
            "item_id": np.array([r[1] for r in rows], dtype="int64"),
            "event_type": "rating",
            "value": 4.0,
            "timestamp": pd.to_datetime([r[2] for r in rows], unit="s", utc=True).astype("datetime64[us, UTC]"),
        }
    )


def test_grid_is_every_combination_in_a_stable_order():
    assert grid({"k": [50, 250], "half_life_days": [7]}) == [
        {"half_life_days": 7, "k": 50},
        {"half_life_days": 7, "k": 250},
    ]
    assert grid({}) == [{}]


def test_encode_keeps_only_rankable_unseen_truth_of_known_users():
    fit = frame([(1, 10, 1), (1, 11, 2), (2, 11, 3)])
    # user 1: item 10 already seen (dropped), 12 unknown to the fit data (dropped), 11 seen
    # user 2: item 10 is new to them and known -> kept; user 3 has no history -> skipped
    truth = frame([(1, 10, 5), (1, 12, 6), (2, 10, 7), (3, 10, 8)])
    target = encode(Task("P1", "test", fit, truth, fit))
    assert target.data.user_ids[target.rows].tolist() == [2]
    assert target.truth.toarray().tolist() == [[1.0, 0.0]]
    assert target.hidden.toarray().tolist() == [[0.0, 1.0]]


def test_where_the_data_set_repeats_a_rebought_item_is_truth_and_nothing_is_hidden():
    fit = frame([(1, 10, 1), (1, 11, 2), (2, 11, 3)])
    truth = frame([(1, 10, 5), (1, 12, 6), (2, 10, 7), (2, 11, 8)])
    target = encode(Task("P1", "test", fit, truth, fit, repeats=True))
    assert target.repeats and target.hidden.nnz == 0
    assert target.data.user_ids[target.rows].tolist() == [1, 2]
    assert target.truth.toarray().tolist() == [[1.0, 0.0], [1.0, 1.0]]
    assert all(task.repeats for task in tasks("P1", split_p1(fit), repeats=True).values())


def test_p0_test_hides_validation_items_and_fits_on_train_only():
    parts = {"train": frame([(1, 10, 1)]), "valid": frame([(1, 11, 2)]), "test": frame([(1, 12, 3)])}
    p0, p1 = tasks("P0", parts), tasks("P1", parts)
    assert len(p0["test"].fit) == 1 and len(p0["test"].hidden) == 2
    assert len(p1["test"].fit) == 2 and len(p1["test"].hidden) == 2


def test_decay_recovers_the_drift_that_plain_item_cf_misses(drift):
    protocol = tasks("P2", split_p2(drift.events))
    runs = evaluate_protocol(
        protocol,
        drift.items,
        config(itemknn={"k": [20]}, itemknn_decay={"k": [20], "half_life_days": [5, 30]}, pop={}),
    )
    by_name = {run.name: run for run in runs}
    assert set(by_name) == {"itemknn", "itemknn_decay", "pop"}
    assert by_name["itemknn_decay"].test["ndcg_at_10"] > 1.2 * by_name["itemknn"].test["ndcg_at_10"]
    for run in runs:
        # Users whose last item repeats one they had seen have nothing to find: not evaluated.
        assert run.users == len(encode(protocol["test"]).rows) > 60
        for name, value in run.test.items():
            assert 0.0 <= value <= (np.inf if name.startswith("novelty") else 1.0), name
        assert run.test["recall_at_20"] >= run.test["recall_at_10"]


def test_tuning_picks_the_best_validation_setting(drift):
    (run,) = evaluate_protocol(
        tasks("P2", split_p2(drift.events)), drift.items, config(itemknn_decay={"k": [20], "half_life_days": [1, 30, 3650]})
    )
    scores = [t["ndcg_at_10"] for t in run.trials]
    assert run.valid == max(scores)
    assert run.params == {k: v for k, v in run.trials[int(np.argmax(scores))].items() if k != "ndcg_at_10"}


def test_report_writes_metrics_markdown_and_real_plots(drift, tmp_path):
    results = {
        "P1": evaluate_protocol(tasks("P1", split_p1(drift.events)), drift.items, config(pop={}, sar={"half_life_days": [30]})),
        "P2": evaluate_protocol(tasks("P2", split_p2(drift.events)), drift.items, config(pop={}, sar={"half_life_days": [30]})),
    }
    metrics = write_report(results, "synthetic", tmp_path, 10)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    assert saved["P2"]["sar"]["params"] == {"half_life_days": 30}
    assert saved["P2"]["sar"]["ndcg_at_10"] == round(results["P2"][1].test["ndcg_at_10"], 4)
    assert set(saved["P1"]["pop"]["segments"]) == {"all", "cold_users", "active_users", "long_tail_items", "cold_items"}
    report = (tmp_path / "report.md").read_text()
    assert "| sar | half_life_days=30 |" in report
    for name in ("metrics_by_model", "segments", "decay_curves", "score_distributions"):
        png = tmp_path / "plots" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def genre_vectors(items: pd.DataFrame) -> ItemVectors:
    """Unit vectors of each item's categories: a stand-in for text vectors that carry genre."""
    names = sorted({c for row in items["categories"] for c in row})
    ordered = items.sort_values("item_id")
    vectors = np.array([[float(n in row) for n in names] for row in ordered["categories"]], dtype=np.float32)
    return ItemVectors(ordered["item_id"].to_numpy(), vectors / np.linalg.norm(vectors, axis=1, keepdims=True))


def test_text_models_get_the_item_vectors_and_say_when_they_are_missing(drift):
    protocol = tasks("P2", split_p2(drift.events))
    with pytest.raises(ValueError, match="needs item vectors: run `decayrec embed` first"):
        evaluate_protocol(protocol, drift.items, config(lm={"half_life_days": [30]}))
    runs = evaluate_protocol(
        protocol,
        drift.items,
        config(
            pop={},
            lm={"half_life_days": [5, 3650]},
            itemknn_decay_lm={"k": [20], "half_life_days": [5], "alpha": [0.0, 0.5]},
        ),
        genre_vectors(drift.items),
    )
    by_name = {run.name: run for run in runs}
    # The drift is a genre change: a decayed genre profile finds it, popularity cannot.
    assert by_name["lm"].params == {"half_life_days": 5}
    assert by_name["lm"].test["ndcg_at_10"] > 1.5 * by_name["pop"].test["ndcg_at_10"]
    assert {t["alpha"] for t in by_name["itemknn_decay_lm"].trials} == {0.0, 0.5}


def test_cold_items_are_those_with_few_users_in_the_fitting_data(drift):
    target = encode(tasks("P2", split_p2(drift.events))["test"])
    ctx = context(target, drift.items, EvaluateConfig().segments.model_copy(update={"cold_item_events": 30}))
    users_per_item = np.diff(target.data.matrix().tocsc().indptr)
    np.testing.assert_array_equal(ctx.cold, users_per_item < 30)
    assert 0 < ctx.cold.sum() < len(ctx.cold)
