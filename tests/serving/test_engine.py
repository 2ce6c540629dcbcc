"""The serving engine on a real trained champion and a real Feast store: the features it
scores with equal training's, unknown users fall back, live events are logged and change the
next answer, and an unreachable online store degrades instead of failing."""
from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from serving.reasons import REASONS


def engine_for(params_path: Path, folder: Path, store=None, candidates=None):
    """An engine over the champion of the run at ``params_path``, its bundle in ``folder``
    (``candidates``: other ``train.candidates`` settings for the bundle)."""

    from features.store import open_store
    from flows.config import load_params
    from models.registry import Registry
    from serving.bundle import load_bundle, write_bundle
    from serving.engine import Engine
    from serving.event_log import EventLog

    params = load_params(params_path)
    if candidates is not None:
        params = params.model_copy(update={"train": params.train.model_copy(update={"candidates": candidates})})
    registry = Registry(params.train.registry_dir)
    tag = registry.champion()
    write_bundle(params, tag, registry.info(tag), folder / "bundle")
    bundle = load_bundle(folder / "bundle")
    return Engine(bundle, registry.path(tag), store or open_store(bundle.params.features.store), EventLog(folder / "events.jsonl"))


@pytest.fixture(scope="module")
def engine(trained, tmp_path_factory):
    return engine_for(trained, tmp_path_factory.mktemp("engine"))


def test_serving_features_equal_the_training_features_for_the_same_history(engine, trained):
    """The champion sees in serving exactly what it saw in training: same candidates, same
    features (training reads Feast point in time, serving reads the online store), for
    users scored one at a time and together in one batch."""
    from flows.config import load_params
    from models.baselines import EASE, DecayedItemKNN, DecayedPopularity
    from models.ranking_data import history, view

    assert engine.bundle.kind == "scorer"  # the fixture trains no sequence model
    params = load_params(trained)
    events, items = engine.bundle.events, engine.bundle.items
    hp, settings = engine.bundle.hp, params.train  # training reads params.yaml's train section
    h = history(events, items, engine.vectors, params.features)
    assert np.array_equal(h.data.item_ids, engine.item_ids)
    rows = np.arange(0, h.data.n_users, max(1, h.data.n_users // 5))
    v = view(h, rows, DecayedItemKNN(k=settings.knn_k, half_life_days=hp["half_life_days"]).fit(h.data),
             EASE(reg=hp["ease_reg"], max_items=settings.ease_max_items).fit(h.data), DecayedPopularity(half_life_days=settings.pop_half_life_days).fit(h.data),
             hp["alpha"], settings.candidates)
    from models.ranking_data import candidates

    short, long = engine.item_features(engine.now)
    users = [int(u) for u in h.data.user_ids[rows]]
    one_by_one = [candidates(engine.ranker.signals(engine.history(u), engine.online_user(u), engine.now), engine.item_share,
                             short, long, engine.ranker.alpha, settings.candidates) for u in users]
    together = candidates(engine.ranker.signals(engine.histories_of(users), engine.online_users(users), engine.now),
                          engine.item_share, short, long, engine.ranker.alpha, settings.candidates)
    for r, user in enumerate(users):
        for items_, features in ((one_by_one[r][0][0], one_by_one[r][2][0]), (together[0][r], together[2][r])):
            assert np.array_equal(items_, v.items[r]), f"user {user}: candidates differ"
            np.testing.assert_allclose(features, v.features[r], rtol=1e-4, atol=1e-5, err_msg=f"user {user}")


def test_pooled_serving_features_equal_the_pooled_training_features(trained, tmp_path):
    """Past ``candidates.ann.exact_max_items`` items, serving and training both take pooled
    candidates from the vector index: the same candidates and features, one by one and together."""
    from flows.config import load_params
    from models.baselines import EASE, DecayedItemKNN, DecayedPopularity
    from models.ranking_data import candidates, history, view

    params = load_params(trained)
    settings = params.train.candidates.model_copy(update={"ann": params.train.candidates.ann.model_copy(update={"exact_max_items": 0})})
    served = engine_for(trained, tmp_path, candidates=settings)
    # The package step built the index into the bundle; the service loaded it from there.
    assert served.bundle.neighbourhood is not None and served.ranker.sources.near is served.bundle.neighbourhood
    assert served.ranker.sources.is_pooled and not served.ranker.sources.near.index.exact
    hp, train = served.bundle.hp, params.train
    h = history(served.bundle.events, served.bundle.items, served.vectors, params.features)
    rows = np.arange(0, h.data.n_users, max(1, h.data.n_users // 5))
    v = view(h, rows, DecayedItemKNN(k=train.knn_k, half_life_days=hp["half_life_days"]).fit(h.data),
             EASE(reg=hp["ease_reg"], max_items=train.ease_max_items).fit(h.data),
             DecayedPopularity(half_life_days=train.pop_half_life_days).fit(h.data), hp["alpha"], settings)
    short, long = served.item_features(served.now)
    users = [int(u) for u in h.data.user_ids[rows]]
    together = candidates(served.ranker.signals(served.histories_of(users), served.online_users(users), served.now),
                          served.item_share, short, long, served.ranker.alpha, settings)
    one = candidates(served.ranker.signals(served.history(users[0]), served.online_user(users[0]), served.now),
                     served.item_share, short, long, served.ranker.alpha, settings)
    assert np.array_equal(one[0][0], together[0][0])
    for r, user in enumerate(users):
        assert np.array_equal(together[0][r], v.items[r]), f"user {user}: candidates differ"
        np.testing.assert_allclose(together[2][r], v.features[r], rtol=1e-4, atol=1e-5, err_msg=f"user {user}")
    answer = served.recommend(users[0], 10)
    assert len(answer.items) == 10 and not answer.fallback


def test_a_known_user_gets_k_unseen_items_with_reasons(engine):
    user = int(engine.bundle.events["user_id"].iloc[0])
    seen = set(engine.bundle.events.loc[engine.bundle.events["user_id"] == user, "item_id"])
    answer = engine.recommend(user, 10, exclude=[])
    assert not answer.fallback and not answer.degraded
    ids = [r.item_id for r in answer.items]
    assert len(ids) == 10 == len(set(ids)) and not seen & set(ids)
    assert all(r.reason for r in answer.items)
    scores = [r.score for r in answer.items]
    assert scores == sorted(scores, reverse=True)
    excluded = engine.recommend(user, 10, exclude=ids[:3])
    assert not set(ids[:3]) & {r.item_id for r in excluded.items}


def test_where_the_data_set_repeats_own_items_are_candidates_with_the_features_training_gives(trained, tmp_path):
    """data.repeats: a user's own past items join their candidates, in serving as in
    training's view, with their own-history features; a fallback may offer them too."""
    from flows.config import load_params
    from models.baselines import EASE, DecayedItemKNN, DecayedPopularity
    from models.ranking_data import candidates, feature_names, history, view

    served = engine_for(trained, tmp_path)
    # The fixture's scorer was trained without repeats; the candidates and their features
    # are the engine's own work, read under the data set's setting at each request.
    served.params = served.params.model_copy(update={"data": served.params.data.model_copy(update={"repeats": True})})
    params, hp = load_params(trained), served.bundle.hp
    settings = params.train
    h = history(served.bundle.events, served.bundle.items, served.vectors, params.features)
    rows = np.arange(0, h.data.n_users, max(1, h.data.n_users // 5))
    v = view(h, rows, DecayedItemKNN(k=settings.knn_k, half_life_days=hp["half_life_days"]).fit(h.data),
             EASE(reg=hp["ease_reg"], max_items=settings.ease_max_items).fit(h.data),
             DecayedPopularity(half_life_days=settings.pop_half_life_days).fit(h.data), hp["alpha"], settings.candidates, repeats=True)
    users = [int(u) for u in h.data.user_ids[rows]]
    short, long = served.item_features(served.now)
    items, _, features = candidates(served.ranker.signals(served.histories_of(users), served.online_users(users), served.now),
                                    served.item_share, short, long, served.ranker.alpha, settings.candidates)
    own = feature_names(True).index("own_events")
    again = 0
    for r, user in enumerate(users):
        assert np.array_equal(items[r], v.items[r]), f"user {user}: candidates differ"
        np.testing.assert_allclose(features[r], v.features[r], rtol=1e-4, atol=1e-5, err_msg=f"user {user}")
        mine = np.isin(items[r], np.unique(served.history(user).items))
        assert (features[r][mine, own] > 0).all() and (features[r][~mine, own] == 0).all()
        again += int(mine.sum())
    assert again > 0  # some of the users' own items are among their candidates
    user = users[0]
    mine = set(served.bundle.events.loc[served.bundle.events["user_id"] == user, "item_id"])
    assert served._seen(user) == set()  # an outage's fallback would not hide them
    column = int(served.history(user).items[0])
    seen, times = np.unique(served.history(user).items, return_counts=True)
    assert served.why.one("cf", seen, column, times).startswith("you have had it")
    assert served.item_keys[column] in mine


def test_reasons_name_the_seen_item_with_the_strongest_cf_link_or_text_cosine(engine):
    # The definition, item by item: the seen item with the largest similarity (the first on ties).
    rng = np.random.default_rng(0)
    for user in list(engine.histories)[:30]:
        seen, times = np.unique(engine.histories[user][0], return_counts=True)
        columns = np.r_[seen[:1], rng.integers(0, len(engine.item_ids), 9)]
        sources = ["cf", "cf", "lm", "cf", "lm", "pop", "ease", "cf", "lm", "cf"]
        for text, source, column in zip(engine.why.many(sources, seen, columns, times), sources, columns):
            if column in seen:
                assert text.startswith("you have had it")
                continue
            if source == "cf":
                links = [engine.why.similar_to[int(s), int(column)] for s in seen]
            elif source == "lm":
                links = [float(engine.unit_vectors[s] @ engine.unit_vectors[column]) for s in seen]
            else:
                assert text == REASONS[source]
                continue
            best = engine.item_keys[seen[int(np.argmax(links))]]
            assert text == REASONS[source].format(item=engine.titles.get(best, str(best))), (user, source, column)


def test_a_scorer_trained_where_items_repeat_is_refused_by_a_bundle_where_they_do_not(engine):
    from dataclasses import replace

    from models.interactions import Interactions
    from models.ranking_data import feature_names
    from serving.ranking import ScorerRanking

    rebuyer = replace(engine.model, features=feature_names(True))
    with pytest.raises(ValueError, match=r"data.repeats: false\) makes .*retrain it on this data set"):
        ScorerRanking(engine, rebuyer, Interactions.from_events(engine.bundle.events))


def test_a_batch_answers_each_request_as_it_would_be_answered_alone(engine):
    """Known users (one twice, with other k and exclude), an unknown user, and a request
    dated before the service clock: each gets its own answer, or its own error."""
    from serving.engine import Ask
    from serving.schemas import OutsideClock

    users = [int(u) for u in engine.bundle.events["user_id"].drop_duplicates().iloc[:4]]
    alone = engine.recommend(users[0], 10)
    asks = [Ask(u, 10) for u in users] + [
        Ask(users[0], 3, frozenset(r.item_id for r in alone.items[:2])),
        Ask(10**9, 4),
        Ask(users[1], 5, at=pd.Timestamp(engine.now - 86_400, unit="s", tz="UTC").to_pydatetime()),
    ]
    answers = engine.recommend_many(asks)
    for ask, answer in zip(asks[:4], answers[:4]):
        single = engine.recommend(ask.user_id, 10)
        assert [(r.item_id, r.source, r.reason) for r in answer.items] == [(r.item_id, r.source, r.reason) for r in single.items]
        np.testing.assert_allclose([r.score for r in answer.items], [r.score for r in single.items], rtol=1e-5, atol=1e-6)
        assert answer.batch == 5 and not answer.fallback
    assert [r.item_id for r in answers[4].items] == [r.item_id for r in alone.items[2:5]]
    assert answers[5].fallback and len(answers[5].items) == 4
    assert isinstance(answers[6], OutsideClock) and "outside the service clock's window" in str(answers[6])


def test_an_unknown_user_gets_decayed_popularity_marked_fallback(engine):
    answer = engine.recommend(10**9, 5)
    assert answer.fallback and not answer.degraded
    assert [r.item_id for r in answer.items] == [int(engine.item_ids[c]) for c in np.argsort(-engine.pop, kind="stable")[:5]]


def test_explain_names_topics_recent_items_with_decay_weights_and_the_lm_score(engine):
    from serving.explain import explain

    user = int(engine.bundle.events["user_id"].iloc[0])
    top = engine.recommend(user, 1).items[0]
    why = explain(engine, user, top.item_id)
    assert why["topics"]["lately"] and all(t["topic"] in engine.categories for t in why["topics"]["lately"])
    weights = [r["decay_weight"] for r in why["recent"]]
    assert weights and all(0 <= w <= 1 for w in weights)
    assert why["recent"][0]["days_ago"] <= why["recent"][-1]["days_ago"]
    assert -1 <= why["lm_score"] <= 1
    assert why["rank"] == 1 and why["model_score"] == pytest.approx(top.score, abs=1e-3)


def test_similar_gives_text_and_cf_neighbours_and_refuses_unknown_items(engine):
    from serving.engine import UnknownItem
    from serving.explain import similar

    item = int(engine.bundle.events["item_id"].value_counts().index[0])
    found = similar(engine, item, 5)
    assert len(found["lm"]) == 5 and len(found["cf"]) == 5
    assert item not in {n["item_id"] for n in found["lm"] + found["cf"]}
    with pytest.raises(UnknownItem):
        similar(engine, -5, 5)


def test_live_events_are_logged_and_change_the_next_answer(trained, tmp_path):
    from conftest import own_store
    from features.store import online_users

    trained = own_store(trained, tmp_path)
    engine = engine_for(trained, tmp_path)
    user = int(engine.bundle.events["user_id"].iloc[-1])
    first = engine.recommend(user, 10).items
    at = pd.Timestamp(engine.now, unit="s", tz="UTC") + pd.Timedelta(minutes=1)
    events = pd.DataFrame({"user_id": [user, user], "item_id": [first[0].item_id, first[1].item_id],
                           "event_type": ["rating", "rating"], "value": [5.0, 4.0], "timestamp": [at, at]})
    events["timestamp"] = events["timestamp"].astype("datetime64[us, UTC]")
    assert engine.ingest(events) == {"accepted": 2, "duplicates": 0, "online": True}
    logged = engine.log.read()
    assert list(logged["item_id"]) == [first[0].item_id, first[1].item_id]
    after = [r.item_id for r in engine.recommend(user, 10).items]
    assert first[0].item_id not in after and first[1].item_id not in after
    assert int(online_users(engine.store, [user])["last_event_s"].iloc[0]) == int(at.timestamp())
    # A restart replays the log: the events are part of the user's history again.
    again = engine_for(trained, tmp_path)
    assert {first[0].item_id, first[1].item_id} <= set(again.item_ids[again.history(user).items])


def _rated(engine, user: int, item: int, minutes: int) -> pd.DataFrame:
    at = pd.Timestamp(engine.now, unit="s", tz="UTC") + pd.Timedelta(minutes=minutes)
    events = pd.DataFrame({"user_id": [user], "item_id": [item], "event_type": ["rating"], "value": [5.0], "timestamp": [at]})
    return events.assign(timestamp=events["timestamp"].astype("datetime64[us, UTC]"))


def test_a_new_online_store_version_gets_the_logged_events_once_on_first_start(trained, tmp_path):
    """Live events reach the version a service serves; a later version (a retrain) starts
    without them. The first engine on it pushes the whole log, the next one pushes nothing."""
    from conftest import own_store
    from features.store import online_users, open_store
    from flows.config import load_params
    from models.registry import Registry
    from serving.bundle import load_bundle, write_bundle
    from serving.engine import Engine
    from serving.event_log import EventLog

    for name in ("old", "new"):
        (tmp_path / name).mkdir()
    old = engine_for(own_store(trained, tmp_path / "old"), tmp_path / "old")
    user = int(old.bundle.events["user_id"].iloc[-1])
    old.ingest(_rated(old, user, int(old.recommend(user, 1).items[0].item_id), 1))
    served = online_users(old.store, [user]).drop(columns="user_id")

    params = load_params(own_store(trained, tmp_path / "new"))  # a version loaded elsewhere, without live events
    registry = Registry(params.train.registry_dir)
    bundle = load_bundle(write_bundle(params, registry.champion(), registry.info(registry.champion()), tmp_path / "new" / "bundle"))
    store = open_store(bundle.params.features.store)
    assert online_users(store, [user])["last_event_s"].iloc[0] < served["last_event_s"].iloc[0]

    def start() -> Engine:
        return Engine(bundle, registry.path(registry.champion()), open_store(bundle.params.features.store), EventLog(old.log.path))

    start()
    pd.testing.assert_frame_equal(online_users(store, [user]).drop(columns="user_id"), served)
    start()  # a second worker, or a restart: the version holds the log already
    pd.testing.assert_frame_equal(online_users(store, [user]).drop(columns="user_id"), served)


def test_events_whose_online_push_failed_are_pushed_with_the_next_ones(trained, tmp_path, monkeypatch):
    from conftest import own_store
    from features import live
    from features.store import online_users

    engine = engine_for(own_store(trained, tmp_path), tmp_path)
    users = [int(u) for u in engine.bundle.events["user_id"].unique()[:2]]
    item = int(engine.item_ids[0])
    first, second = _rated(engine, users[0], item, 1), _rated(engine, users[1], item, 2)
    real = live.update_users
    monkeypatch.setattr(live, "update_users", lambda *a: (_ for _ in ()).throw(ConnectionError("store away")))
    assert engine.ingest(first)["online"] is False
    assert online_users(engine.store, users[:1])["last_event_s"].iloc[0] < first["timestamp"].iloc[0].timestamp()
    monkeypatch.setattr(live, "update_users", real)
    assert engine.ingest(second)["online"] is True
    pushed = online_users(engine.store, users)["last_event_s"].tolist()
    assert pushed == [int(first["timestamp"].iloc[0].timestamp()), int(second["timestamp"].iloc[0].timestamp())]


def test_kept_user_signals_answer_as_fresh_ones_until_the_users_events_change(trained, tmp_path):
    from conftest import own_store

    trained = own_store(trained, tmp_path)
    engine = engine_for(trained, tmp_path)
    users = [int(u) for u in engine.bundle.events["user_id"].unique()[:4]]
    first = {u: engine.recommend(u, 10) for u in users}
    assert engine.ranker.signal_cache.hits == 0
    again = {u: engine.recommend(u, 10) for u in users}
    assert engine.ranker.signal_cache.hits == len(users)  # every user's rows kept
    assert all(_listed(again[u]) == _listed(first[u]) for u in users)

    changed, untouched = users[0], users[1]
    at = pd.Timestamp(engine.now, unit="s", tz="UTC") + pd.Timedelta(minutes=1)
    events = pd.DataFrame({"user_id": [changed], "item_id": [first[changed].items[0].item_id], "event_type": ["rating"],
                           "value": [5.0], "timestamp": [at]})
    events["timestamp"] = events["timestamp"].astype("datetime64[us, UTC]")
    engine.ingest(events)
    hits = engine.ranker.signal_cache.hits
    after = engine.recommend(changed, 10)
    assert engine.ranker.signal_cache.hits == hits  # the user's events changed: computed again
    kept = engine.recommend(untouched, 10)
    assert engine.ranker.signal_cache.hits == hits + 1  # another user's events do not touch theirs
    # A new engine (empty cache, the log replayed) computes both from scratch.
    fresh = engine_for(trained, tmp_path)
    assert _listed(fresh.recommend(changed, 10)) == _listed(after)
    assert _listed(fresh.recommend(untouched, 10)) == _listed(kept)


def _listed(answer) -> list[tuple[int, float]]:
    return [(r.item_id, round(r.score, 5)) for r in answer.items]


def test_unknown_items_in_events_are_refused_before_anything_is_written(engine):
    from serving.engine import UnknownItem

    before = len(engine.log.read())
    events = pd.DataFrame({"user_id": [1], "item_id": [-7], "event_type": ["rating"], "value": [3.0],
                           "timestamp": pd.to_datetime([engine.now], unit="s", utc=True).astype("datetime64[us, UTC]")})
    with pytest.raises(UnknownItem, match="-7"):
        engine.ingest(events)
    assert len(engine.log.read()) == before


def test_an_unreachable_redis_degrades_to_popularity_with_a_flag(trained, tmp_path):
    """Production profile (Redis + PostgreSQL registry, a schema and project of this test's
    own), loaded for real, then served with Redis on a closed port."""
    from conftest import free_port, own_store
    from features.store import drop_production, open_store
    from flows.config import load_params

    name = f"t{uuid.uuid4().hex[:10]}"
    store = {"profile": "production", "project": name, "local_dir": str(tmp_path / "feast"),
             "redis": "127.0.0.1:6379,db=4", "postgres_schema": name}
    try:
        path = own_store(trained, tmp_path, store)
        healthy = engine_for(path, tmp_path / "ok")
        user = int(healthy.bundle.events["user_id"].iloc[0])
        assert not healthy.recommend(user, 5).degraded
        down = healthy.params.features.store.model_copy(update={"redis": f"127.0.0.1:{free_port()},db=4"})
        engine = engine_for(path, tmp_path / "down", store=open_store(down))
        answer = engine.recommend(user, 5)
        assert answer.fallback and answer.degraded and len(answer.items) == 5
        seen = set(engine.bundle.events.loc[engine.bundle.events["user_id"] == user, "item_id"])
        assert not seen & {r.item_id for r in answer.items}
        from serving.engine import Ask

        other = int(healthy.bundle.events["user_id"].iloc[-1])
        batch = engine.recommend_many([Ask(user, 5), Ask(other, 5)])
        assert all(a.fallback and a.degraded and len(a.items) == 5 for a in batch)
    finally:
        drop_production(load_params(trained).features.store.model_copy(update=store))


def test_two_service_processes_share_live_events_through_the_log(trained, tmp_path):
    """Each worker process has an engine of its own; what one takes in, the other folds in
    from the log before its next answer (its popularity state equal to the writer's)."""
    from conftest import own_store

    trained = own_store(trained, tmp_path)
    writer = engine_for(trained, tmp_path)
    reader = engine_for(trained, tmp_path)
    user = int(writer.bundle.events["user_id"].iloc[-1])
    item = reader.recommend(user, 1).items[0].item_id
    at = pd.Timestamp(writer.now, unit="s", tz="UTC") + pd.Timedelta(minutes=5)
    events = pd.DataFrame({"user_id": [user, 4242], "item_id": [item, item], "event_type": ["rating"] * 2,
                           "value": [5.0, 2.0], "timestamp": [at, at]})
    events["timestamp"] = events["timestamp"].astype("datetime64[us, UTC]")
    writer.ingest(events)
    assert item not in [r.item_id for r in reader.recommend(user, 10).items]
    assert not reader.recommend(4242, 3).fallback
    np.testing.assert_allclose(reader.pop, writer.pop)
    np.testing.assert_allclose(reader.item_features(reader.now), writer.item_features(writer.now))
    assert reader.now == writer.now


def test_a_sequence_champion_ranks_the_whole_catalogue_for_each_user(engine, tmp_path):
    """A sequence model as champion: each answer is the model's own top unseen items for the
    user's history, alone or in a batch."""
    from dataclasses import replace

    from flows.config import SequenceSettings
    from models.interactions import Interactions
    from models.sequence import SequenceModel
    from serving.engine import Ask, Engine
    from serving.event_log import EventLog

    params = SequenceSettings(dim=16, blocks=1, heads=1, max_len=30, epochs=1, batch_size=64)
    model = SequenceModel(item_vectors=engine.vectors, params=params)
    model.train(Interactions.from_events(engine.bundle.events))
    folder = tmp_path / "model"
    folder.mkdir()
    for name, blob in model.to_files({}).items():
        (folder / name).write_bytes(blob)
    served = Engine(replace(engine.bundle, kind="sequence", model="sequence-test", hp={}), folder, engine.store,
                    EventLog(tmp_path / "events.jsonl"))
    users = [int(u) for u in engine.bundle.events["user_id"].drop_duplicates().iloc[:3]]
    for user in users:
        hist = served.history(user)
        scores = model.bind(hist).score(np.array([0]))[0].astype(np.float64)
        scores[np.unique(hist.items)] = -np.inf
        expected = [int(served.item_ids[c]) for c in np.argsort(-scores, kind="stable")[:5]]
        answer = served.recommend(user, 5)
        assert [r.item_id for r in answer.items] == expected
        assert all(r.source == "sequence" and r.reason for r in answer.items)
    batch = served.recommend_many([Ask(u, 5) for u in users])
    assert [[r.item_id for r in a.items] for a in batch] == [[r.item_id for r in served.recommend(u, 5).items] for u in users]


def test_a_store_made_with_other_decay_settings_is_refused_naming_both(trained, tmp_path):
    from conftest import own_store
    from features.store import StoreMismatch, open_store
    from flows.config import load_params
    from models.registry import Registry
    from serving.bundle import load_bundle, write_bundle
    from serving.engine import Engine
    from serving.event_log import EventLog

    params = load_params(own_store(trained, tmp_path))
    registry = Registry(params.train.registry_dir)
    tag = registry.champion()
    bundle = load_bundle(write_bundle(params, tag, registry.info(tag), tmp_path / "bundle"))
    features = bundle.params.features.model_copy(update={"user_half_life_days": 14.0})
    bundle.params = bundle.params.model_copy(update={"features": features})
    with pytest.raises(StoreMismatch, match=r'made with \{.*"user_half_life_days": 30.*params are \{.*"user_half_life_days": 14\.0'):
        Engine(bundle, registry.path(tag), open_store(bundle.params.features.store), EventLog(tmp_path / "events.jsonl"))
