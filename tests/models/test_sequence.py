"""The sequence model: its input windows, that it learns an order, and its stored form."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from models.baselines import Popularity
from models.interactions import Interactions
from models.lm_score import ItemVectors
from flows.config import SequenceSettings
from models.sequence import SequenceModel, SequenceNet, sequences

SMALL = SequenceSettings(dim=16, blocks=1, heads=2, max_len=8, dropout=0.0, lr=1e-2, batch_size=16, epochs=30)


def events(rows: list[tuple[int, int, int]]) -> pd.DataFrame:
    """(user, item, second) rows as an events table."""
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "second"])
    return pd.DataFrame({
        "user_id": frame["user_id"], "item_id": frame["item_id"],
        "timestamp": pd.to_datetime(frame["second"], unit="s", utc=True), "value": 1.0,
    })


def cycle(n_users: int = 40, n_items: int = 12, length: int = 10, seed: int = 0) -> pd.DataFrame:
    """Every user walks the items in the same circular order from a random start: the next
    item is always the current one plus one, which popularity cannot know."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(n_users):
        start = int(rng.integers(n_items))
        rows += [(user, (start + t) % n_items, 1_000_000 + 3_600 * (user + t)) for t in range(length)]
    return events(rows)


def vectors_for(item_ids: np.ndarray, dim: int = 8, seed: int = 1) -> ItemVectors:
    v = np.random.default_rng(seed).normal(size=(len(item_ids), dim)).astype(np.float32)
    return ItemVectors(np.asarray(item_ids), v / np.linalg.norm(v, axis=1, keepdims=True))


def test_sequences_keep_each_users_latest_events_in_time_order_left_padded():
    # User 7's events arrive out of order in the file; two share a second (file order wins).
    data = Interactions.from_events(events([
        (7, 30, 300), (7, 10, 100), (9, 20, 50), (7, 20, 200), (7, 40, 300), (7, 50, 400),
    ]))
    items, days = sequences(data, max_len=4)
    col = {int(i): c + 1 for c, i in enumerate(data.item_ids)}
    assert items[0].tolist() == [col[20], col[30], col[40], col[50]]  # the oldest (10) falls off
    assert items[1].tolist() == [0, 0, 0, col[20]]
    assert days[1, :3].tolist() == [0, 0, 0]
    np.testing.assert_allclose(days[0], (np.array([200, 300, 300, 400]) - 50) / 86_400, rtol=1e-6)


def test_learns_an_order_popularity_cannot_know():
    data = Interactions.from_events(cycle())
    model = SequenceModel(item_vectors=vectors_for(data.item_ids), params=SMALL).fit(data)
    rows = np.arange(data.n_users)
    last = sequences(data, SMALL.max_len)[0][:, -1] - 1
    expected = (data.item_ids[last] + 1) % 12
    hit = (data.item_ids[model.score(rows).argmax(axis=1)] == expected).mean()
    pop_hit = (data.item_ids[Popularity().fit(data).score(rows).argmax(axis=1)] == expected).mean()
    assert hit > 0.9 > pop_hit + 0.5


def test_training_is_repeatable_and_monitored_training_keeps_the_best_epoch():
    data = Interactions.from_events(cycle())
    vecs = vectors_for(data.item_ids)
    first = SequenceModel(item_vectors=vecs, params=SMALL).fit(data).score(np.arange(5))
    second = SequenceModel(item_vectors=vecs, params=SMALL).fit(data).score(np.arange(5))
    np.testing.assert_array_equal(first, second)

    model = SequenceModel(item_vectors=vecs, params=SMALL)
    scores = iter([0.1, 0.3, 0.2, 0.2, 0.2, 0.9])
    states = []

    def monitor(m):
        states.append(m.score(np.arange(3)).copy())
        return next(scores)

    curve = model.train(data, monitor)
    assert curve == [0.1, 0.3, 0.2, 0.2, 0.2]  # patience 3 stops before the sixth epoch
    np.testing.assert_allclose(model.score(np.arange(3)), states[1], rtol=1e-6)


def test_bind_scores_new_items_by_their_text_and_new_users_by_their_sequence():
    train = cycle()
    data = Interactions.from_events(train)
    item_ids = np.append(data.item_ids, 99)
    vecs = vectors_for(item_ids)
    model = SequenceModel(item_vectors=vecs, params=SMALL).fit(data)
    later = pd.concat([train, events([(0, 99, 9_000_000), (500, 3, 9_000_000)])], ignore_index=True)
    bound = Interactions.from_events(later)
    scores = model.bind(bound).score(np.arange(bound.n_users))
    assert scores.shape == (bound.n_users, 13) and np.isfinite(scores).all()
    # A model without text knows nothing of item 99: its id row is the zero "unknown" row.
    plain = SequenceModel(item_vectors=None, params=SequenceSettings(**{**SMALL.__dict__, "text": False})).fit(data)
    assert np.all(plain.bind(bound).score(np.arange(3))[:, -1] == 0.0)


def test_time_decay_changes_nothing_when_events_share_a_time_and_something_when_they_do_not():
    torch.manual_seed(0)
    p = SequenceSettings(dim=16, blocks=1, heads=2, max_len=5, dropout=0.0)
    decayed = SequenceNet(6, 4, p).eval()
    plain = SequenceNet(6, 4, SequenceSettings(**{**p.__dict__, "time_decay": False})).eval()
    plain.load_state_dict(decayed.state_dict())
    table = decayed.catalogue(torch.arange(1, 7), torch.randn(6, 4))
    items = torch.tensor([[0, 1, 2, 3, 4]])
    same_time = torch.zeros(1, 5)
    spread = torch.tensor([[0.0, 0.0, 1.0, 30.0, 400.0]])
    with torch.no_grad():
        torch.testing.assert_close(decayed(items, same_time, table), plain(items, same_time, table))
        assert not torch.allclose(decayed(items, spread, table), plain(items, spread, table))


@pytest.mark.parametrize("ids", ["int", "str"])
def test_stored_files_load_without_code_and_score_the_same(ids):
    """String item ids (a shop's SKUs) are stored beside the weights, as the ids they are."""
    table = cycle()
    if ids == "str":
        table = table.assign(item_id=table["item_id"].map(lambda i: f"SKU-{i:03d}"))
    data = Interactions.from_events(table)
    vecs = vectors_for(data.item_ids)
    model = SequenceModel(item_vectors=vecs, params=SMALL).fit(data)
    files = model.to_files({"hp": {"epochs": SMALL.epochs}})
    loaded, config = SequenceModel.from_files(files["weights.safetensors"], files["config.json"], vecs)
    assert config["kind"] == "sequence" and config["hp"] == {"epochs": SMALL.epochs}
    rows = np.arange(data.n_users)
    np.testing.assert_allclose(loaded.bind(data).score(rows), model.score(rows), rtol=1e-6)
    assert list(loaded.vocabulary_) == list(model.vocabulary_) and type(loaded.vocabulary_[0]).__name__ == ("int64" if ids == "int" else "str_")


def test_no_user_with_two_events_is_a_clear_error():
    data = Interactions.from_events(events([(1, 1, 10), (2, 2, 20)]))
    with pytest.raises(ValueError, match="two events"):
        SequenceModel(item_vectors=None, params=SMALL).fit(data)


def test_sampled_softmax_learns_the_order_and_falls_back_to_full_softmax_over_a_small_catalogue():
    data = Interactions.from_events(cycle(n_items=30))
    vecs = vectors_for(data.item_ids)
    rows = np.arange(data.n_users)
    last = sequences(data, SMALL.max_len)[0][:, -1] - 1
    expected = (data.item_ids[last] + 1) % 30
    sampled = SequenceModel(item_vectors=vecs, params=SMALL.model_copy(update={"negatives": 5})).fit(data)
    assert (data.item_ids[sampled.score(rows).argmax(axis=1)] == expected).mean() > 0.9
    full = SequenceModel(item_vectors=vecs, params=SMALL).fit(data).score(rows)
    assert not np.allclose(sampled.score(rows), full)  # the sampled path was taken
    # As many negatives as items: the full softmax, exactly.
    whole = SequenceModel(item_vectors=vecs, params=SMALL.model_copy(update={"negatives": 30})).fit(data).score(rows)
    np.testing.assert_array_equal(whole, full)


def test_sampled_loss_over_every_item_is_the_full_softmax_loss():
    # Each position's softmax is then its next item and every other item: the full one.
    data = Interactions.from_events(cycle(n_items=30))
    model = SequenceModel(item_vectors=vectors_for(data.item_ids), params=SMALL).fit(data)
    items, days = sequences(data, SMALL.max_len + 1)
    x, x_days, target = torch.from_numpy(items[:8, :-1]), torch.from_numpy(days[:8, :-1]), torch.from_numpy(items[:8, 1:] - 1)
    with torch.no_grad():
        table = model.net_.catalogue(model.rows_, model.text_)
        real = target >= 0
        full = torch.nn.functional.cross_entropy(model.net_(x, x_days, table)[real] @ table.T, target[real])
        sampled = model._sampled_loss(x, x_days, target, torch.arange(data.n_items))
    assert torch.isclose(sampled, full, rtol=1e-5)


def test_a_spent_time_budget_stops_training_inside_the_epoch():
    data = Interactions.from_events(cycle(n_users=200))
    model = SequenceModel(item_vectors=vectors_for(data.item_ids), params=SMALL.model_copy(update={"batch_size": 4, "timeout_s": 0.0}))
    curve = model.train(data, monitor=lambda m: 0.5)
    assert curve == [0.5]  # validated once, after the first batch
    assert model.stats_["epochs"] == 1 and model.stats_["targets"] < 4 * 10  # one batch of 4 users' 9 targets each
