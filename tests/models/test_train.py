"""The scorer and its training on synthetic drifting users, through real Feast histories."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from features.splits import split_p2
from features.synthetic import SyntheticConfig, make_drift_dataset
from flows.config import CandidateSettings, EvaluateConfig, FeaturesConfig, ScorerSettings, TrainConfig
from models import metrics
from models.baselines import Popularity
from models.candidates import recall, union
from models.lm_score import ItemVectors
from models.protocols import tasks
from models.ranking_data import FEATURES
from models.scorer import Scorer, scores, top_items, train
from models.train import inner_split, phase, run, views

SETTINGS = TrainConfig(
    trials=2, candidates=CandidateSettings(cf=30, ease=20, lm=10, pop=10, recent_items=3),
    scorer=ScorerSettings(hidden=16, proj=4, max_epochs=4, patience=2, batch_users=32), p99_users=20,
)
HP = {"half_life_days": 10.0, "alpha": 0.2, "ease_reg": 500.0, "epochs": 3}


@pytest.fixture(scope="module")
def drift():
    return make_drift_dataset(SyntheticConfig(n_users=80, n_items=120, events_per_user=30, seed=11))


@pytest.fixture(scope="module")
def vectors(drift):
    """Unit vectors of each item's categories: text-like vectors that carry the genre."""
    names = sorted({c for row in drift.items["categories"] for c in row})
    ordered = drift.items.sort_values("item_id")
    raw = np.array([[float(n in row) for n in names] for row in ordered["categories"]], dtype=np.float32)
    return ItemVectors(ordered["item_id"].to_numpy(), raw / np.linalg.norm(raw, axis=1, keepdims=True))


@pytest.fixture(scope="module")
def test_phase(drift, vectors, tmp_path_factory):
    task = tasks("P2", split_p2(drift.events))["test"]
    return phase(task, drift.items, vectors, FeaturesConfig(), SETTINGS)


def test_union_keeps_first_sources_order_and_pads():
    items, source = union([np.array([[3, 1, -1]]), np.array([[1, 4, 5]])], 4)
    assert items.tolist() == [[3, 1, 4, 5]] and source.tolist() == [[0, 0, 1, 1]]
    assert recall(items, __import__("scipy.sparse").sparse.csr_matrix(np.array([[0, 1, 1, 0, 0, 0]]))) == 0.5


def test_inner_split_takes_each_users_last_event_under_p2_and_the_latest_share_under_p1(drift):
    history, labels = inner_split("P2", drift.events, 0.25)
    assert len(labels) == drift.events["user_id"].nunique() and labels["user_id"].is_unique
    assert history["timestamp"].groupby(history["user_id"]).max().le(labels.set_index("user_id")["timestamp"]).all()
    earlier, later = inner_split("P1", drift.events, 0.25)
    assert len(later) == pytest.approx(0.25 * len(drift.events), abs=1) and earlier["timestamp"].max() <= later["timestamp"].min()


def test_views_hold_unseen_candidates_with_finite_features(test_phase):
    learn, rank = views(test_phase, HP, SETTINGS)
    assert rank.features.shape == (len(test_phase.target.rows), SETTINGS.candidates.width, len(FEATURES))
    assert np.isfinite(rank.features).all()
    seen = test_phase.outer.data.matrix()[rank.rows].toarray().astype(bool)
    picked = np.take_along_axis(seen, np.maximum(rank.items, 0), axis=1) & (rank.items >= 0)
    assert not picked.any()  # nobody is offered what they already had
    (view_, positive), = learn
    assert positive.any() and positive.shape == view_.items.shape


def test_training_is_repeatable_and_survives_a_round_trip_through_safetensors(test_phase):
    learn, rank = views(test_phase, HP, SETTINGS)
    first, _, stats = train(learn, SETTINGS.scorer, epochs=2)
    second, _, _ = train(learn, SETTINGS.scorer, epochs=2)
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, second.state_dict()[name]), name
    assert stats["pairs"] > 0 and stats["pairs_per_s"] > 0
    files = Scorer(first, SETTINGS.scorer, HP).to_files({"lm_model": "local"})
    loaded, config = Scorer.from_files(files["weights.safetensors"], files["config.json"])
    np.testing.assert_array_equal(scores(loaded.net, rank), scores(first, rank))
    assert config["hp"] == HP and config["kind"] == "scorer" and loaded.hp == HP and loaded.settings == SETTINGS.scorer
    tampered = files["config.json"].replace(b'"cf"', b'"cf_old"')
    with pytest.raises(ValueError, match="expects features"):
        Scorer.from_files(files["weights.safetensors"], tampered)


def test_the_loss_scores_only_the_sampled_columns_and_equals_the_full_forward_one(test_phase):
    """Training sends a user's positives and sampled negatives through the net, not every
    candidate: the loss is the sampled softmax over the full forward pass's logits."""
    from models.scorer import ScorerNet, _batch, _loss

    (v, positive), = views(test_phase, HP, SETTINGS)[0]
    idx = np.flatnonzero(positive.any(axis=1))[:20]
    net = ScorerNet(len(FEATURES), v.history.item_vectors.shape[1], 16, 4, 0.3).eval()  # no dropout
    loss, count = _loss(net, v, idx, positive[idx], 5, np.random.default_rng(3))
    # The same negatives (same generator), read from the logits of every candidate.
    rng = np.random.default_rng(3)
    candidates = (v.items[idx] >= 0) & ~positive[idx]
    keys = np.where(candidates, rng.random(candidates.shape), -np.inf)
    negatives = np.argpartition(-keys, 4, axis=1)[:, :5]
    with torch.no_grad():
        logits = net(*_batch(v, idx)).numpy().astype(np.float64)
    rows, cols = np.nonzero(positive[idx])
    expected = []
    for r, c in zip(rows, cols):
        mine = negatives[r][candidates[r, negatives[r]]]
        everything = np.r_[logits[r, c], logits[r, mine]]
        expected.append(np.log(np.exp(everything).sum()) - logits[r, c])
    assert count == len(rows) > 0
    assert float(loss) == pytest.approx(float(np.mean(expected)), rel=1e-5)


def test_the_trained_scorer_beats_popularity_on_drifting_users(test_phase):
    learn, rank = views(test_phase, HP, SETTINGS)
    net, _, _ = train(learn, SETTINGS.scorer, epochs=4)
    target = test_phase.target

    def ndcg(top):
        return float(np.nanmean(metrics.ranking_metrics(top, target.truth, 10)["ndcg"]))

    pop = metrics.top_k(Popularity().fit(target.data).score(target.rows), target.hidden, 10)
    assert ndcg(top_items(net, rank, 10)) > 1.5 * ndcg(pop)
    # Candidates exclude what the user has seen: the same list as ranking every item.
    everything = np.full((len(rank.rows), target.data.n_items), -np.inf, dtype=np.float32)
    r, c = np.nonzero(rank.items >= 0)
    everything[r, rank.items[r, c]] = scores(net, rank)[r, c]
    np.testing.assert_array_equal(metrics.top_k(everything, target.hidden, 10), top_items(net, rank, 10))


def test_label_windows_step_back_in_time(drift):
    p2 = [inner_split("P2", drift.events, 0.25, w) for w in (1, 2)]
    assert (p2[1][1]["timestamp"].to_numpy() <= p2[0][1].set_index("user_id").loc[p2[1][1]["user_id"], "timestamp"].to_numpy()).all()
    assert len(p2[1][0]) == len(drift.events) - 2 * drift.events["user_id"].nunique()
    first, second = (inner_split("P1", drift.events, 0.25, w) for w in (1, 2))
    assert second[1]["timestamp"].max() <= first[1]["timestamp"].min() and len(second[0]) == pytest.approx(0.5 * len(drift.events), abs=1)
    with pytest.raises(ValueError, match="leaves no history"):
        inner_split("P1", drift.events, 0.25, 4)


def test_more_label_windows_give_more_users_to_learn_from(drift, vectors):
    task = tasks("P2", split_p2(drift.events))["test"]
    two = phase(task, drift.items, vectors, FeaturesConfig(), SETTINGS.model_copy(update={"label_windows": 2}))
    learn, _ = views(two, HP, SETTINGS)
    assert len(learn) == 2
    _, _, stats = train(learn, SETTINGS.scorer, epochs=1)
    assert stats["users"] == sum(int(p.any(axis=1).sum()) for _, p in learn)


def test_run_searches_on_validation_and_reports_test_metrics(drift, vectors):
    outcome = run(tasks("P2", split_p2(drift.events)), drift.items, vectors, FeaturesConfig(), EvaluateConfig().segments, SETTINGS)
    assert len(outcome.trials) == 2 and outcome.trials[0]["half_life_days"] == 7.0  # the defaults go first
    assert outcome.valid == pytest.approx(max(t["valid_ndcg_at_10"] for t in outcome.trials), abs=1e-4)
    assert 1 <= outcome.params["epochs"] <= SETTINGS.scorer.max_epochs
    assert 0 < outcome.candidate_recall["test"] <= 1
    for key in ("ndcg_at_10", "coverage_at_10", "ild_at_10", "p99_score_ms"):
        assert np.isfinite(outcome.test[key]), key


def test_a_history_of_some_users_holds_their_state_as_the_whole_history_does(drift, vectors):
    from models.ranking_data import history

    whole = history(drift.events, drift.items, vectors, FeaturesConfig())
    some = whole.data.user_ids[::3]
    part = history(drift.events, drift.items, vectors, FeaturesConfig(), some)
    rows, others = np.arange(0, whole.data.n_users, 3), np.setdiff1d(np.arange(whole.data.n_users), np.arange(0, whole.data.n_users, 3))
    for name in ("user_share", "user_events", "profiles"):
        np.testing.assert_allclose(getattr(part, name)[rows], getattr(whole, name)[rows], rtol=1e-6, atol=1e-9)
        assert not getattr(part, name)[others].any()  # nothing read for users outside the sample
    for name in ("pop_short", "pop_long", "item_share", "item_vectors"):  # items read every user's events
        np.testing.assert_allclose(getattr(part, name), getattr(whole, name), rtol=1e-6)
    with pytest.raises(ValueError, match="no events"):
        history(drift.events, drift.items, vectors, FeaturesConfig(), np.array([10**9]))


def test_a_sampled_phase_gives_its_users_the_views_of_the_whole_phase(drift, vectors, test_phase):
    task = tasks("P2", split_p2(drift.events))["test"]
    sampled = phase(task, drift.items, vectors, FeaturesConfig(), SETTINGS.model_copy(update={"max_users": 25}))
    assert len(sampled.target.rows) == 25
    _, small = views(sampled, HP, SETTINGS)
    _, whole = views(test_phase, HP, SETTINGS)
    at = np.searchsorted(whole.rows, small.rows)
    assert np.array_equal(whole.rows[at], small.rows)
    np.testing.assert_array_equal(small.items, whole.items[at])
    np.testing.assert_allclose(small.features, whole.features[at], rtol=1e-5, atol=1e-6)
