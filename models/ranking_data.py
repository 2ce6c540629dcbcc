"""Per user-item features for the scorer, from one history of events.

A view is what a model sees at one moment: the history's users and items, each user's
decayed state and LM profile, each item's decayed popularity, and the candidates to rank
with their features. Decayed state comes from Feast historical retrieval (each user as of
their own last event, each item as of the history's end) out of a store built from the
history alone, so nothing after the history can leak into a training example; the CF and LM
scores come from models fitted on the same history.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

from features.decay import SECONDS_PER_DAY
from models import pool
from models.ann import Neighbourhood
from models.baselines import EASE, DecayedItemKNN, DecayedPopularity, minmax_rows
from models.candidates import top_unseen, union
from models.interactions import Interactions
from models.metrics import order_keys
from models.lm_score import ItemVectors, normalise
from models.signals import Signals, Sources, read, select

if TYPE_CHECKING:
    from flows.config import CandidateSettings

FEATURES = (
    "cf", "cf_rank", "ease", "ease_rank", "lm", "lm_recent", "topic", "pop_short", "pop_long", "trend",
    "user_events", "user_idle_days", "user_items", "from_cf", "from_ease", "from_lm", "from_pop",
    "hour_sin", "hour_cos", "weekday_sin", "weekday_cos",
)
# Where the data set repeats (``data.repeats``): the user's own events with the candidate.
# Measured on the bundled shop (P2 test NDCG@10): 0.3898 without them, 0.4784 with; a data
# set that does not repeat has none of the user's own items among candidates, so they stay out.
REPEAT_FEATURES = ("own_events", "own_idle_hours", "own_latest")


def feature_names(repeats: bool) -> tuple[str, ...]:
    """The scorer's input features, in order, for a data set that repeats or not."""
    return FEATURES + REPEAT_FEATURES if repeats else FEATURES


@dataclass
class History:
    """What does not depend on the searched hyperparameters, for one history of events."""

    data: Interactions
    user_share: np.ndarray  # (n_users, n_categories) decayed interest share
    user_events: np.ndarray  # decayed event count at the history's end
    profiles: np.ndarray  # (n_users, dim) unit LM profiles
    item_vectors: np.ndarray  # (n_items, dim) unit item vectors
    item_share: np.ndarray  # (n_items, n_categories) an item's unit of interest per category
    pop_short: np.ndarray
    pop_long: np.ndarray
    indexes: dict[str, Neighbourhood] = field(default_factory=dict)  # the items' vector index by ANN settings, built on first use


@dataclass
class View:
    """Candidates of some users of a history, and their features."""

    history: History
    rows: np.ndarray  # user rows of history.data
    items: np.ndarray  # (len(rows), width) candidate item columns, -1 = padding
    features: np.ndarray  # (len(rows), width, len(feature_names(repeats))) float32


def history(events: pd.DataFrame, items: pd.DataFrame, vectors: ItemVectors, features_cfg, users=None) -> History:
    """Everything point-in-time about ``events``, read back through a Feast store of its own.

    ``users``: the ids whose state is built and read (None: every user's); the other users'
    rows stay zero, so a view may take only these users. Training reads the users it
    samples: at 250,000 customers the histories of all of them took 279 s and most of
    training's 21 GB, for the 50,000 it looked at."""
    from features.feature_repo.definitions import repository
    from features.ids import kind_of
    from features.interest import categories_of, category_weights, read_items, read_users
    from features.lm_profile import lm_profile_table, unit_profiles
    from features.store import ITEM_FEATURES, LM_FEATURES, USER_FEATURES, apply, build, historical, open_store, write_tables

    data = Interactions.from_events(events)
    rows = np.arange(data.n_users) if users is None else np.sort(data.rows_of(np.asarray(users)))
    if len(rows) and rows[0] < 0:
        raise ValueError("history: some of users have no events in it")
    theirs = events if users is None else events[events["user_id"].isin(data.user_ids[rows])]
    params = features_cfg
    with tempfile.TemporaryDirectory(prefix="decayrec-view-") as tmp:
        cfg = features_cfg.model_copy(
            update={
                "out_dir": Path(tmp) / "features",
                "profiles_dir": Path(tmp) / "profiles",
                "store": features_cfg.store.model_copy(update={"profile": "local", "project": "view", "local_dir": Path(tmp) / "feast"}),
            }
        )
        tables = build(events, items, cfg, users=None if users is None else data.user_ids[rows])
        write_tables({name: _latest(table) for name, table in tables.items()}, cfg.out_dir)
        profiles = lm_profile_table(theirs, vectors.item_ids, vectors.vectors, params)
        write_tables({"user_lm_profile": _latest(profiles)}, cfg.profiles_dir)
        store = open_store(cfg.store)
        apply(store, repository(cfg.out_dir, cfg.profiles_dir, "", kind_of(events["user_id"]), kind_of(events["item_id"])))
        last = np.full(data.n_users, -np.inf)
        np.maximum.at(last, data.users, data.seconds)
        # A second past each user's last event: their whole history, nothing after it.
        user_rows = pd.DataFrame({"user_id": data.user_ids[rows], "event_timestamp": pd.to_datetime(last[rows] + 1, unit="s", utc=True)})
        user_state = historical(store, user_rows, USER_FEATURES + LM_FEATURES)
        item_rows = pd.DataFrame(
            {"item_id": data.item_ids, "event_timestamp": pd.to_datetime(np.full(data.n_items, data.now + 1), unit="s", utc=True)}
        )
        found = historical(store, item_rows, ITEM_FEATURES)
    state = read_users(user_state, data.now, params)
    # Items idle for longer than the views' TTL come back empty: their decayed popularity is ~0.
    known = found.dropna(subset=["last_event_s"])
    popularity = read_items(known, data.now, params).set_index("item_id").reindex(data.item_ids).fillna(0.0)
    categories = categories_of(items)
    share = np.stack(state["interest_share"].to_numpy()).astype(np.float32)

    def every_user(values: np.ndarray) -> np.ndarray:  # zeros beside ``rows``: untouched pages cost no memory
        out = np.zeros((data.n_users, *values.shape[1:]), values.dtype)
        out[rows] = values
        return out

    return History(
        data=data,
        user_share=every_user(share),
        user_events=every_user(state["events_decayed"].to_numpy(np.float64)),
        profiles=every_user(unit_profiles(user_state, vectors.vectors.shape[1])),
        item_vectors=normalise(vectors.aligned(data.item_ids)),
        item_share=category_weights(items, data.item_ids, categories),
        pop_short=popularity["popularity_short"].to_numpy(np.float64),
        pop_long=popularity["popularity_long"].to_numpy(np.float64),
    )


def _latest(table: pd.DataFrame) -> pd.DataFrame:
    """Each entity's latest row. The history reads every user a second after their last
    event and every item after the history's end, where no other row can answer: a table of
    these rows gives the same reads for a fraction of the point-in-time join (M's 4.9M events
    make 3.2M item-day rows for 100,000 items)."""
    key = "user_id" if "user_id" in table.columns else "item_id"
    return table.sort_values([key, "event_timestamp"]).drop_duplicates(key, keep="last")


CHUNK_ROWS = 1024  # users per chunk: bounds the (rows x recent x items) similarity block


def view(
    h: History, rows: np.ndarray, cf: DecayedItemKNN, ease: EASE, pop: DecayedPopularity, alpha: float, cfg: CandidateSettings,
    repeats: bool = False,
) -> View:
    """Candidates and features for ``rows``, with ``cf``, ``ease`` and ``pop`` fitted on ``h.data``;
    with ``repeats`` a user's own past items may be candidates.

    ``alpha`` weighs the LM score against item-CF when choosing the CF candidates (the
    textbook ``I0 exp(-kt) + alpha LM`` scorer); the scorer then sees both scores apart.
    """
    rows = np.asarray(rows, dtype=np.int64)
    sources = Sources(cf, ease, h.item_vectors, cfg.recent_items)  # once: it is the same for every chunk
    if cfg.pooled(h.data.n_items):
        sources = pooled_sources(h, sources, cfg)
    popularity = pop.score(rows[:1])[0]  # the same row for every user
    order = np.argsort(-popularity.astype(np.float32), kind="stable")
    parts = [_chunk(h, rows[i : i + CHUNK_ROWS], sources, popularity, order, alpha, cfg, repeats) for i in range(0, len(rows), CHUNK_ROWS)]
    if not parts:
        return View(h, rows, np.empty((0, cfg.width), np.int64), np.empty((0, cfg.width, len(feature_names(repeats))), np.float32))
    return View(h, rows, np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


def pooled_sources(h: History, sources: Sources, cfg: CandidateSettings) -> Sources:
    """``sources`` with the vector index and neighbour lists of ``h``'s items, built once per
    history (they depend on the item vectors alone) and kept on it for the next views."""
    key = cfg.ann.model_dump_json()
    if key not in h.indexes:
        h.indexes[key] = sources.with_index(cfg).near
    return sources.with_index(cfg, h.indexes[key])


def ranks_of(scores: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """Per row, the rank (0 = best) of each of ``columns`` under float32 ``scores``, ties by
    lower column: its place in a stable sort of the row by descending score.

    Each score and its column become one int64 key that sorts in that order, so a plain
    sort (SIMD in numpy) and a binary search replace the stable argsort of the whole row:
    6x faster on ml-1m's serving batches, where most of a row ties at zero.
    """
    if scores.dtype != np.float32:
        raise TypeError(f"ranks_of needs float32 scores, got {scores.dtype}")
    keys = order_keys(scores, np.broadcast_to(np.arange(scores.shape[1], dtype=np.int64), scores.shape))
    wanted = np.take_along_axis(keys, columns, axis=1)
    keys.sort(axis=1)
    out = np.empty(columns.shape, dtype=np.float32)
    for r in range(len(keys)):
        out[r] = np.searchsorted(keys[r], wanted[r])
    return out


def _chunk(h: History, rows: np.ndarray, sources: Sources, pop: np.ndarray, pop_order: np.ndarray, alpha: float,
           cfg: CandidateSettings, repeats: bool) -> tuple[np.ndarray, np.ndarray]:
    hist = select(h.data, rows)
    scores = sources.pooled(hist, h.profiles[rows]) if sources.is_pooled else sources.scores(hist, h.profiles[rows])
    s = read(hist, scores, pop, h.user_share[rows], h.user_events[rows], h.data.now, repeats, pop_order)
    items, _, features = candidates(s, h.item_share, h.pop_short, h.pop_long, alpha, cfg)
    return items, features


def candidates(
    s: Signals, item_share: np.ndarray, pop_short: np.ndarray, pop_long: np.ndarray, alpha: float, cfg: CandidateSettings
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's candidates and their features.

    Returns:
        ``(items, source, features)``: ``(rows, width)`` item columns (-1 = padding), the
        index in ``models.candidates.SOURCES`` of the source that proposed each, and
        ``(rows, width, len(feature_names(repeats)))`` float32 features, ``repeats`` being
        whether ``s`` lets a user's own items be candidates.
    """
    lists = pool.lists(s.pooled, s.exclude, alpha, cfg) if s.pooled is not None else dense_lists(s, alpha, cfg)
    items, source = union([*lists, pool.first_unseen(s.pop_order, s.exclude, s.seen.shape[0], cfg.pop)], cfg.width)
    if s.pooled is not None:
        scores = pool.values(s.pooled, items)
    else:
        safe = np.maximum(items, 0)
        take = lambda matrix: np.take_along_axis(matrix, safe, axis=1)  # noqa: E731
        scores = {"cf": take(s.cf), "cf_rank": ranks_of(s.cf, safe), "ease": take(s.ease), "ease_rank": ranks_of(s.ease, safe),
                  "lm": take(s.lm), "lm_recent": take(s.lm_recent)}
    safe = np.maximum(items, 0)
    n_hist = np.asarray(s.seen.sum(axis=1)).ravel()
    hour, weekday = clock(s.user_last)
    hour, weekday = 2 * np.pi * hour / 24, 2 * np.pi * weekday / 7
    per_user = lambda values: np.broadcast_to(np.asarray(values, dtype=np.float32)[:, None], items.shape)  # noqa: E731
    columns = {
        "cf": scores["cf"],
        "cf_rank": 1.0 / np.log2(2.0 + scores["cf_rank"]),
        "ease": scores["ease"],
        "ease_rank": 1.0 / np.log2(2.0 + scores["ease_rank"]),
        "lm": scores["lm"],
        "lm_recent": scores["lm_recent"],
        "topic": np.einsum("rc,rwc->rw", s.user_share, item_share[safe]),
        "pop_short": np.log1p(pop_short[safe]),
        "pop_long": np.log1p(pop_long[safe]),
        "trend": np.log((pop_short[safe] + 1.0) / (pop_long[safe] + 1.0)),
        "user_events": per_user(np.log1p(s.user_events)),
        "user_idle_days": per_user(np.log1p((s.now - s.user_last) / SECONDS_PER_DAY)),
        "user_items": per_user(np.log1p(n_hist)),
        "from_cf": source == 0, "from_ease": source == 1, "from_lm": source == 2, "from_pop": source == 3,
        "hour_sin": per_user(np.sin(hour)), "hour_cos": per_user(np.cos(hour)),
        "weekday_sin": per_user(np.sin(weekday)), "weekday_cos": per_user(np.cos(weekday)),
    }
    repeats = s.exclude is None
    if repeats:
        own_events, own_last = s.own.at(items, s.seen.shape[1])
        # Hours, not days: a view, its cart and its purchase are minutes apart.
        columns["own_events"] = np.log1p(own_events)
        columns["own_idle_hours"] = np.where(own_events > 0, np.log1p(np.maximum(s.now - own_last, 0.0) / (SECONDS_PER_DAY / 24)), 0.0)
        columns["own_latest"] = own_last == s.user_last[:, None]
    features = np.stack([np.asarray(columns[name], dtype=np.float32) for name in feature_names(repeats)], axis=-1)
    features[items < 0] = 0.0
    return items, source, features


def dense_lists(s: Signals, alpha: float, cfg: CandidateSettings) -> list[np.ndarray]:
    """The CF, EASE and LM sources' top-N over dense rows of the whole catalogue (``SOURCES`` order)."""
    return [
        top_unseen(s.cf + np.float32(alpha) * minmax_rows(s.lm), s.exclude, cfg.cf),
        top_unseen(s.ease, s.exclude, cfg.ease),
        top_unseen(s.lm_recent, s.exclude, cfg.lm),
    ]


def clock(seconds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """UTC hour of day to the minute (``13.5`` is 13:30) and weekday (Monday 0) of epoch
    ``seconds`` to the microsecond (``Interactions.seconds``): pandas' calendar fields,
    without building timestamps (a quarter of a millisecond that every served batch paid)."""
    whole = np.floor(np.asarray(seconds, dtype=np.float64))
    days, of_day = np.divmod(whole, SECONDS_PER_DAY)
    hour, of_hour = np.divmod(of_day, 3600)
    # Summed as pandas' fields were, to the last bit. 1970-01-01 was a Thursday (3).
    return hour + (of_hour // 60) / 60, (days + 3) % 7


def positives(v: View, truth: sp.csr_matrix) -> np.ndarray:
    """Boolean ``(len(rows), width)``: candidates that are in each row's ``truth``."""
    truth = sp.csr_matrix(truth)
    out = np.zeros(v.items.shape, dtype=bool)
    for r in range(len(v.rows)):
        wanted = truth.indices[truth.indptr[r] : truth.indptr[r + 1]]
        out[r] = np.isin(v.items[r], wanted) & (v.items[r] >= 0)
    return out
