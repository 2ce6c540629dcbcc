"""The train step end to end on synthetic drifting users: table, registry, gate, rollback."""
from __future__ import annotations

import numpy as np
import pytest

from features.synthetic import SyntheticConfig, make_drift_dataset
from flows.cli import format_training, main
from flows.steps import split_step, train_step
from models.embeddings import save_vectors
from models.registry import Registry


@pytest.fixture
def params(params_for, tmp_path):
    drift = make_drift_dataset(SyntheticConfig(n_users=80, n_items=120, events_per_user=30, seed=11))
    base = params_for()
    base.validation.validated_dir.mkdir(parents=True)
    drift.events.to_parquet(base.validation.validated_dir / "events.parquet", index=False)
    drift.items.to_parquet(base.validation.validated_dir / "items.parquet", index=False)
    names = sorted({c for row in drift.items["categories"] for c in row})
    ordered = drift.items.sort_values("item_id")
    raw = np.array([[float(n in row) for n in names] for row in ordered["categories"]], dtype=np.float32)
    lm = base.lm.model_copy(update={"out": tmp_path / "embeddings" / "items.npz"})
    save_vectors(lm.out, ordered["item_id"].to_numpy(), raw / np.linalg.norm(raw, axis=1, keepdims=True), "genres")
    train = base.train.model_copy(
        update={
            "protocols": ["P2"], "trials": 2, "registry_dir": tmp_path / "registry", "out_dir": tmp_path / "training",
            "p99_users": 20,
            "candidates": base.train.candidates.model_copy(update={"cf": 30, "ease": 20, "lm": 10, "pop": 10}),
            "scorer": base.train.scorer.model_copy(update={"hidden": 16, "proj": 4, "max_epochs": 4, "batch_users": 32}),
            "sequence": base.train.sequence.model_copy(update={"dim": 16, "blocks": 1, "max_len": 20, "epochs": 3,
                                                               "batch_size": 16}),
        }
    )
    evaluate = base.evaluate.model_copy(update={"models": {"pop": {}, "itemknn_decay": {"k": [20], "half_life_days": [7]}}})
    split = base.split.model_copy(update={"protocols": ["P2"]})
    params = base.model_copy(update={"lm": lm, "train": train, "evaluate": evaluate, "split": split})
    split_step(params)
    return params


def test_train_registers_promotes_then_rejects_an_equal_challenger(params):
    first = train_step(params)
    registry = Registry(params.train.registry_dir)
    assert first["promoted"] and registry.champion() == first["model"] == first["champion"]
    table = first["protocols"]["P2"]
    assert set(table) == {"scorer", "sequence", "pop", "itemknn_decay"}
    for model in ("scorer", "sequence"):
        assert 0 < table[model]["ndcg_at_10"] <= 1 and table[model]["p99_score_ms"] > 0
    # The registered model is the one better on validation, and its files say which it is.
    better = max(("scorer", "sequence"), key=lambda m: (table[m]["valid_ndcg_at_10"], m == "scorer"))
    info = registry.info(first["model"])
    assert info["labels"]["protocol"] == "P2" and len(info["labels"]["data_version"]) == 12
    assert first["kind"] == info["labels"]["kind"] == better
    assert info["metrics"]["ndcg_at_10"] == pytest.approx(table[better]["ndcg_at_10"], abs=1e-4)
    assert (registry.path(first["model"]) / "weights.safetensors").stat().st_size > 0
    assert (params.train.out_dir / "trials_P2.jsonl").read_text().count("\n") == 2
    printed = format_training(first)
    assert "scorer" in printed and "sequence" in printed and "promoted to champion" in printed

    # Same data, same seed, same settings: the same NDCG, which does not clear the margin.
    second = train_step(params)
    assert not second["promoted"] and registry.champion() == first["model"]
    assert any("< " in reason for reason in second["reasons"])
    assert [e["action"] for e in registry.history()] == ["promote"]


def test_rollback_without_an_earlier_champion_is_a_clear_error(params, tmp_path, capsys):
    import yaml

    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"train": {"registry_dir": str(params.train.registry_dir)}}))
    assert main(["--params", str(path), "rollback"]) == 1
    assert "nothing to roll back to" in capsys.readouterr().err


def test_a_sequence_champion_from_another_data_version_is_measured_on_this_split(params):
    import pandas as pd

    from flows.config import SequenceSettings
    from flows.steps import item_vectors
    from models.champion import champion_metrics
    from models.protocols import encode, load_parts, tasks
    from models.sequence import SequenceModel
    from models.train import ranked_ndcg

    parts = load_parts(params.split.out_dir, "P2")
    target = encode(tasks("P2", parts)["test"])
    vectors = item_vectors(params)
    model = SequenceModel(item_vectors=vectors, params=SequenceSettings(dim=16, blocks=1, max_len=20, epochs=2))
    model.fit(encode(tasks("P2", parts)["valid"]).data)
    registry = Registry(params.train.registry_dir)
    tag = registry.save("decayrec-test-sequence", model.to_files({"hp": {}}), metrics={"ndcg_at_10": 0.99}, params={},
                        labels={"protocol": "P2", "kind": "sequence", "data_version": "elsewhere"})
    registry.promote(tag, ["test"])
    items = pd.read_parquet(params.validation.validated_dir / "items.parquet")
    measured = champion_metrics(registry, tasks("P2", parts)["test"], "this one", items, vectors, params)
    assert measured["ndcg_at_10"] != 0.99  # measured now, not the stored figure
    assert measured["ndcg_at_10"] == pytest.approx(ranked_ndcg(model.bind(target.data), target))
