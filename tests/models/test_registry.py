"""The registry on the real BentoML model store: promotion, crashes, rollback."""
from __future__ import annotations

import json
import os

import pytest

from flows.config import GateSettings
from models.gate import decide
from models.registry import ChampionMoved, Registry, RegistryError

BASE = {"ndcg_at_10": 0.20, "coverage_at_10": 0.30, "ild_at_10": 0.60, "p99_score_ms": 10.0}


def saved(registry: Registry, ndcg: float, marker: bytes) -> str:
    metrics = {**BASE, "ndcg_at_10": ndcg}
    return registry.save("decayrec-test-scorer", {"weights.safetensors": marker}, metrics=metrics, params={"hidden": 8},
                         labels={"dataset": "t"})


def gate_and_promote(registry: Registry, tag: str) -> bool:
    champion = registry.champion()
    decision = decide(registry.info(tag)["metrics"], registry.info(champion)["metrics"] if champion else None, GateSettings())
    if decision.promote:
        registry.promote(tag, decision.reasons)
    return decision.promote


def test_a_worse_challenger_is_rejected_and_a_better_one_promoted(tmp_path):
    registry = Registry(tmp_path)
    first = saved(registry, 0.20, b"first")
    assert gate_and_promote(registry, first) and registry.champion() == first
    worse = saved(registry, 0.19, b"worse")
    before = registry.pointer_path.read_bytes()
    assert not gate_and_promote(registry, worse)
    assert registry.pointer_path.read_bytes() == before  # untouched, byte for byte
    better = saved(registry, 0.25, b"better")
    assert gate_and_promote(registry, better) and registry.champion() == better
    assert (registry.path(better) / "weights.safetensors").read_bytes() == b"better"
    assert registry.info(better)["labels"] == {"dataset": "t", "stage": "champion"}
    assert registry.info(first)["labels"]["stage"] == "retired" and registry.info(worse)["labels"]["stage"] == "challenger"
    assert [e["action"] for e in registry.history()] == ["promote", "promote"]


def test_a_crash_mid_promotion_leaves_exactly_one_valid_champion(tmp_path, monkeypatch):
    registry = Registry(tmp_path)
    first = saved(registry, 0.20, b"first")
    registry.promote(first, ["first"])
    second = saved(registry, 0.30, b"second")

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("power cut before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        registry.promote(second, ["better"])
    monkeypatch.undo()
    assert json.loads(registry.pointer_path.read_text())["champion"] == first
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".champion")] == []  # no torn temp left
    assert len(registry.history()) == 1
    registry.promote(second, ["better"])  # and the next promotion works
    assert registry.champion() == second


def test_rollback_restores_the_previous_champion_and_refuses_past_the_first(tmp_path):
    registry = Registry(tmp_path)
    first, second = saved(registry, 0.2, b"1"), saved(registry, 0.3, b"2")
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        registry.rollback()
    registry.promote(first, [])
    registry.promote(second, [])
    assert registry.rollback() == first and registry.champion() == first
    with pytest.raises(RegistryError):
        registry.rollback()
    assert [e["action"] for e in registry.history()] == ["promote", "promote", "rollback"]


def test_promoting_an_unknown_tag_fails_and_changes_nothing(tmp_path):
    import bentoml

    registry = Registry(tmp_path)
    with pytest.raises(bentoml.exceptions.NotFound):
        registry.promote("decayrec-scorer:doesnotexist", [])
    assert registry.champion() is None


def test_promotion_is_a_compare_and_swap_on_the_champion_it_was_measured_against(tmp_path):
    registry = Registry(tmp_path)
    first, second, third = (saved(registry, n, m) for n, m in ((0.20, b"1"), (0.25, b"2"), (0.30, b"3")))
    registry.promote(first, ["first"], expected=None)
    measured_against = registry.champion()
    registry.promote(second, ["another writer, meanwhile"])  # e.g. a run elsewhere
    before = registry.pointer_path.read_bytes(), registry.log_path.read_bytes()
    with pytest.raises(ChampionMoved, match=f"changed from {first} to {second}.*{third}"):
        registry.promote(third, ["better than the first"], expected=measured_against)
    assert (registry.pointer_path.read_bytes(), registry.log_path.read_bytes()) == before  # nothing moved
    registry.promote(third, ["better than the second"], expected=second)
    assert registry.champion() == third and registry.pointer().previous == (first, second)
    with pytest.raises(ChampionMoved, match="changed from None"):
        Registry(tmp_path).promote(first, ["as if there were no champion"], expected=None)


def test_the_stage_label_follows_promotion_and_rollback_in_bentomls_own_cli(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    registry = Registry(tmp_path)
    first, second = saved(registry, 0.20, b"first"), saved(registry, 0.30, b"second")
    assert first.startswith("decayrec-test-scorer:")
    registry.promote(first, ["first"])
    registry.promote(second, ["better"])
    registry.rollback()

    def stage(tag: str) -> str:
        shown = subprocess.run([str(Path(sys.executable).parent / "bentoml"), "models", "get", tag, "-o", "json"],
                               capture_output=True, text=True, check=True).stdout
        return json.loads(shown)["labels"]["stage"]

    assert (stage(first), stage(second)) == ("champion", "retired")
