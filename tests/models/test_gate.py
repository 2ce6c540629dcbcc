"""The promotion gate's decision on metrics alone."""
from __future__ import annotations

from flows.config import GateSettings, GuardSettings
from models.gate import decide

CHAMPION = {"ndcg_at_10": 0.20, "coverage_at_10": 0.30, "ild_at_10": 0.60, "p99_score_ms": 10.0}


def test_the_first_model_is_promoted():
    assert decide(CHAMPION, None, GateSettings()).promote


def test_a_challenger_must_beat_the_champion_by_the_margin():
    cfg = GateSettings(margin=0.05)
    assert not decide({**CHAMPION, "ndcg_at_10": 0.209}, CHAMPION, cfg).promote
    decision = decide({**CHAMPION, "ndcg_at_10": 0.211}, CHAMPION, cfg)
    assert decision.promote and "ndcg_at_10 0.2110 >= 0.2100" in decision.reasons[0]


def test_a_regressed_guard_blocks_a_more_accurate_challenger():
    cfg = GateSettings(margin=0.0, guards={"coverage_at_10": GuardSettings(tolerance=0.10), "p99_score_ms": GuardSettings(tolerance=0.5, higher_is_better=False)})
    better = {**CHAMPION, "ndcg_at_10": 0.3}
    assert decide({**better, "coverage_at_10": 0.28}, CHAMPION, cfg).promote  # within 10%
    narrow = decide({**better, "coverage_at_10": 0.20}, CHAMPION, cfg)
    assert not narrow.promote and "guard coverage_at_10 regressed" in narrow.reasons[-1]
    slow = decide({**better, "p99_score_ms": 16.0}, CHAMPION, cfg)
    assert not slow.promote and "guard p99_score_ms regressed" in slow.reasons[-1]


def test_an_unmeasured_guard_fails_the_gate():
    missing = {k: v for k, v in CHAMPION.items() if k != "ild_at_10"}
    decision = decide({**missing, "ndcg_at_10": 0.5}, CHAMPION, GateSettings())
    assert not decision.promote and decision.reasons == ["challenger has no ild_at_10"]
