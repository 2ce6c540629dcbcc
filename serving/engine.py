"""The recommender behind the service: the champion, the models its candidates come from,
and the live state of every user.

A request is answered from the events so far (the training events, then every live event)
and the user's decayed state in Feast's online store, through the very code that made the
training features (``models.ranking_data.candidates``): what the scorer sees in serving is
what it saw in training. Live events are logged durably first, then folded into memory and
pushed to the online store, so the next request reflects them.

Fallbacks, never errors: a user with no events gets decayed popularity (``fallback``); an
online store or event log that cannot be read gives answers from what is in memory, with
``degraded`` set. "Now" is the service clock (``serving.admission``), which no request moves.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from features.contract import seconds_of
from features.decay import SECONDS_PER_DAY, exponential
from features.ids import python_ids
from features.interest import categories_of, category_weights, read_items
from features.store import check_made_with
from models.baselines import DecayedItemKNN, DecayedPopularity
from models.interactions import Interactions
from models.lm_score import normalise
from serving.admission import Clock, SeenEvents
from serving.bundle import Bundle
from serving.event_log import EventLog
from serving.ranking import RANKINGS
from serving.reasons import REASONS, Reasons

log = logging.getLogger(__name__)

ID_TYPES = {"int": int, "str": str}  # data.tabular.ids -> the Python type of an id at the edges

class UnknownItem(KeyError):
    """An item id that is not in the catalogue: ``(where, item_id)``."""


@dataclass
class Recommendation:
    item_id: int | str
    title: str
    score: float
    source: str
    reason: str


@dataclass(frozen=True)
class Ask:
    """One recommendation request."""

    user_id: int
    k: int
    exclude: frozenset[int] = frozenset()
    at: datetime | None = None  # None: as of the latest event


@dataclass
class Answer:
    user_id: int
    items: list[Recommendation]
    fallback: bool = False  # decayed popularity: the user has no history
    degraded: bool = False  # the online store or the event log could not be read
    model: str | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    batch: int = 1  # requests scored together with this one
    as_of: float = 0.0  # the moment scored for (epoch seconds): context.at, else the service clock


class Engine:
    def __init__(self, bundle: Bundle, model_dir: Path, store, event_log: EventLog) -> None:
        self.bundle, self.store, self.log = bundle, store, event_log
        self.params = bundle.params
        event_log.kinds = self.params.data.ids.model_dump()  # the log holds ids of the bundle's kinds
        check_made_with(store, self.params.features)
        self.train = self.params.train
        self.feature_params = self.params.features
        self._lock = threading.Lock()
        started = time.perf_counter()

        base = bundle.events
        data = Interactions.from_events(base)
        self.item_ids = data.item_ids  # the catalogue the models score
        # Ids as the source has them (int or str): every answer speaks them, columns stay inside.
        self.user_key, self.item_key = ID_TYPES[self.params.data.ids.user_id], ID_TYPES[self.params.data.ids.item_id]
        self.item_keys = python_ids(self.item_ids)
        self._item_col = {key: c for c, key in enumerate(self.item_keys)}
        catalogue = bundle.items.set_index("item_id")
        self.titles = {self.item_key(i): str(t) for i, t in catalogue["title"].items()}
        self.known_items = set(self.titles)
        categories = categories_of(bundle.items)
        self.categories = categories
        self.item_share = category_weights(bundle.items, self.item_ids, categories)
        self.vectors = bundle.vectors
        self.unit_vectors = normalise(bundle.vectors.aligned(self.item_ids))
        hp = bundle.hp
        # A sequence champion has no CF half-life of its own; /similar and reasons then use
        # the user interest half-life.
        half_life = float(hp.get("half_life_days", self.feature_params.user_half_life_days))
        self.knn = DecayedItemKNN(k=self.train.knn_k, half_life_days=half_life).fit(data)
        self.why = Reasons.of(self.knn, self.unit_vectors, self.item_keys, self.titles)
        from models.servable import load

        # Before the per-user copies below: built after them, the ranking's dense EASE
        # weights served ml-1m's /recommend at 5.7-6.1 ms a request in-process against
        # 2.9-3.3 ms (three processes each; where they land in memory, not what they compute).
        self.model, _ = load(model_dir, self.vectors)
        self.ranker = RANKINGS[self.model.kind](self, self.model, data)
        popularity = DecayedPopularity(half_life_days=self.train.pop_half_life_days).fit(data)
        # Popularity is decayed to a reference time of its own, which live events move
        # forward; only its order is read, so this moves no user's scores.
        self.pop, self._pop_at = popularity.item_scores_.astype(np.float64), data.now
        self._pop_order: tuple[np.ndarray, np.ndarray] | None = None
        self.clock = Clock(self.params.serving.clock, data.now)
        self.seen = SeenEvents(base)

        # Each user's events as item columns and seconds, time-ordered.
        order = np.lexsort((data.seconds, data.users))
        items, seconds = data.items[order].astype(np.int64), data.seconds[order]
        bounds = np.searchsorted(data.users[order], np.arange(data.n_users + 1))
        # Copies, not views: a view would keep the whole sorted array alive per user.
        self.histories: dict[int, tuple[np.ndarray, np.ndarray]] = {
            u: (items[a:b].copy(), seconds[a:b].copy()) for u, a, b in zip(python_ids(data.user_ids), bounds[:-1], bounds[1:])
        }
        # The online store gets the logged events it lacks (all of them, for a version that
        # has never served) before its item state is read; memory gets them from the log.
        with event_log.locked():  # a torn tail from a crash is set aside before anything reads
            event_log.repair()
            self._push_pending()
        self.item_state = self._read_item_state()
        self._item_cache: tuple[float, tuple[np.ndarray, np.ndarray]] | None = None
        replayed, self._offset = event_log.read_from(0)
        if len(replayed):
            self._fold_memory(replayed)
        log.info("engine: %s users, %s items, %s live events replayed, %s model %s, ready in %.1f s",
                 f"{len(self.histories):,}", f"{len(self.item_ids):,}", len(replayed), bundle.kind, bundle.model,
                 time.perf_counter() - started)

    # ------------------------------------------------------------------ loading

    def _read_item_state(self) -> pd.DataFrame:
        """Every catalogue item's stored popularity state; from the training events and the
        log when the online store cannot be read."""
        from features.interest import item_feature_table, latest_rows
        from features.store import online_items

        try:
            rows = online_items(self.store, self.item_ids)
            if rows["last_event_s"].notna().any():
                return rows.dropna(subset=["last_event_s"]).set_index("item_id")
        except Exception as error:  # noqa: BLE001 - any store failure: serve from batch state
            log.warning("online store unreadable at start (%s); item popularity from the training events", error)
        events = pd.concat([self.bundle.events, self.log.read()], ignore_index=True)
        table = item_feature_table(events, self.feature_params)
        return latest_rows(table, "item_id", float("inf")).set_index("item_id")

    # ------------------------------------------------------------------ state

    @property
    def now(self) -> float:
        """The service clock, in epoch seconds."""
        return self.clock.now()

    @property
    def newest_event_s(self) -> float:
        """Epoch seconds of the newest event the served features hold (training's or live)."""
        return self._pop_at

    def columns(self, item_ids) -> np.ndarray:
        """Catalogue column of each item id; -1 for items the models do not score."""
        return np.fromiter((self._item_col.get(i, -1) for i in item_ids), dtype=np.int64)

    def history(self, user_id: int) -> Interactions | None:
        """The user's events over the catalogue's columns, as a one-user ``Interactions``;
        None for a user with no events."""
        return self.histories_of([user_id]) if self.has_history(user_id) else None

    def has_history(self, user_id: int) -> bool:
        found = self.histories.get(self.user_key(user_id))
        return found is not None and len(found[0]) > 0

    def histories_of(self, user_ids: list[int]) -> Interactions:
        """Users with events, row ``r`` being ``user_ids[r]``, as one ``Interactions``. Its
        ``now`` is the latest event of all, as in the histories training reads."""
        found = [self.histories[self.user_key(u)] for u in user_ids]
        lengths = [len(cols) for cols, _ in found]
        return Interactions(
            user_ids=np.asarray(user_ids, dtype=np.int64 if self.user_key is int else object), item_ids=self.item_ids,
            users=np.repeat(np.arange(len(found), dtype=np.int32), lengths),
            items=np.concatenate([cols for cols, _ in found]).astype(np.int32),
            seconds=np.concatenate([seconds for _, seconds in found]),
            values=np.ones(sum(lengths), np.float32), now=self.now,
        )

    def online_user(self, user_id: int) -> dict[str, list]:
        """The user's stored interest and LM profile (one row; None where none)."""
        return self.online_users([user_id])

    def online_users(self, user_ids: list[int]) -> dict[str, list]:
        """Stored interest and LM profile of each user, in the order given, in one read: a
        list per feature (a DataFrame would cost more than the read itself)."""
        from features.store import LM_FEATURES, USER_FEATURES

        rows = [{"user_id": self.user_key(u)} for u in user_ids]
        return self.store.get_online_features(features=USER_FEATURES + LM_FEATURES, entity_rows=rows).to_dict()

    def pop_order(self) -> np.ndarray:
        """Item columns by live decayed popularity in float32, as the candidates' popularity
        source ranks it, best first (ties by column): sorted again only when events have
        moved it (a sort of 200k items costs 15 ms a request)."""
        pop = self.pop  # replaced, never edited, when events are folded in
        if self._pop_order is None or self._pop_order[0] is not pop:
            self._pop_order = (pop, np.argsort(-pop.astype(np.float32), kind="stable"))
        return self._pop_order[1]

    def popular(self, k: int, exclude: set[int]) -> list[Recommendation]:
        order = self.pop_order()
        out = []
        for c in order:
            item = self.item_keys[c]
            if item not in exclude:
                out.append(Recommendation(item, self.titles.get(item, str(item)), float(self.pop[c]), "pop", REASONS["pop"]))
            if len(out) == k:
                break
        return out

    # ------------------------------------------------------------------ recommend

    def recommend(self, user_id: int, k: int, exclude: list[int] | None = None, at: datetime | None = None) -> Answer:
        """The user's top ``k`` (minus ``exclude``), as of ``at`` (default: the latest event)."""
        answer = self.recommend_many([Ask(self.user_key(user_id), k, frozenset(self.item_key(i) for i in exclude or ()), at)])[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def recommend_many(self, asks: list[Ask]) -> list[Answer | Exception]:
        """An answer per request, or the ``BadRequest`` that request alone gets.

        Users with events are scored together, one group per moment ``at``: one online read,
        one pass over the catalogue's vectors and one scorer call for the whole group."""
        from serving.schemas import BadRequest

        started = time.perf_counter()
        stale = not self.catch_up()
        out: list[Answer | Exception | None] = [None] * len(asks)
        groups: dict[float, list[int]] = {}
        clock = self.now
        for i, ask in enumerate(asks):
            try:
                now = self.clock.check_at(ask.at, clock)
            except BadRequest as error:
                out[i] = error
                continue
            if not self.has_history(ask.user_id):
                out[i] = Answer(ask.user_id, self.popular(ask.k, ask.exclude), fallback=True, degraded=stale,
                                model=self.bundle.model, timings_ms=_since(started), as_of=now)
            else:
                groups.setdefault(now, []).append(i)
        for now, members in groups.items():
            group = [asks[i] for i in members]
            users = [ask.user_id for ask in group]
            try:
                stored = self.online_users(users)
            except Exception as error:  # noqa: BLE001 - a store outage must not fail a request
                log.warning("online store unreadable (%s): decayed popularity for %d user(s)", error, len(users))
                for i, ask in zip(members, group):
                    out[i] = Answer(ask.user_id, self.popular(ask.k, ask.exclude | self._seen(ask.user_id)), fallback=True,
                                    degraded=True, model=self.bundle.model, timings_ms=_since(started), batch=len(members),
                                    as_of=now)
                continue
            read = time.perf_counter()
            hist = self.histories_of(users)
            lists = self.ranker.rank(hist, stored, group, now)
            bounds = np.searchsorted(hist.users, np.arange(len(group) + 1))
            timings = {"online_read": round((read - started) * 1000, 2), **_since(read, "score")}
            for r, (i, ask, ranked) in enumerate(zip(members, group, lists)):
                seen, times = np.unique(hist.items[bounds[r] : bounds[r + 1]], return_counts=True)
                why = self.why.many([w for *_, w in ranked], seen, np.array([c for c, *_ in ranked], np.int64), times)
                items = [Recommendation(self.item_keys[c], self.titles.get(self.item_keys[c], str(self.item_keys[c])),
                                        score, source, text) for (c, score, source, _), text in zip(ranked, why)]
                out[i] = Answer(ask.user_id, items, degraded=stale, model=self.bundle.model, timings_ms=timings,
                                batch=len(members), as_of=now)
        return out

    def _seen(self, user_id: int) -> set[int]:
        """The ids a fallback must not offer the user: their own items, unless the data set repeats."""
        found = None if self.params.data.repeats else self.histories.get(self.user_key(user_id))
        return set() if found is None else {self.item_keys[c] for c in np.unique(found[0])}

    def item_features(self, now: float) -> tuple[np.ndarray, np.ndarray]:
        """Each catalogue item's decayed (short, long) popularity at ``now``. As in training's
        point-in-time reads, a state older than the views' TTL counts as none."""
        from features.store import within_ttl

        if self._item_cache is not None and self._item_cache[0] == now:
            return self._item_cache[1]
        state = self.item_state.reindex(self.item_ids)
        last = state["last_event_s"].to_numpy(dtype=np.float64, na_value=np.nan)
        known = within_ttl(last, now)
        values = read_items(state[known].reset_index(), now, self.feature_params)
        short, long = np.zeros(len(self.item_ids)), np.zeros(len(self.item_ids))
        short[known], long[known] = values["popularity_short"].to_numpy(), values["popularity_long"].to_numpy()
        self._item_cache = (now, (short, long))
        return short, long

    # ------------------------------------------------------------------ live events

    def ingest(self, events: pd.DataFrame) -> dict:
        """Log ``events`` durably and push them online, then fold them into memory.

        Times outside the clock's window and unknown items refuse the whole batch before
        anything is written. Under the log's lock, after reading what other processes
        logged, events taken before are dropped (a retried batch is a no-op); the log append
        and the online push happen under that lock too: pushes read, fold and write stored
        state, so two at once (threads or processes) would lose events. Returns how many
        were accepted, how many were duplicates, and whether the online store took them (if
        not, they are safe in the log and in memory, and the next push or start pushes them).
        Raises ``OSError`` when the log cannot be written: nothing is acknowledged then."""
        unknown = ~events["item_id"].isin(self.known_items)
        if unknown.any():
            row = int(np.flatnonzero(unknown.to_numpy())[0])
            raise UnknownItem(["body", row, "item_id"], python_ids(events["item_id"].iloc[row : row + 1])[0])
        self.clock.check_events(seconds_of(events["timestamp"]))
        online = True
        with self.log.locked():
            self.catch_up()
            fresh = events[self.seen.fresh(events)]
            if len(fresh):
                self.log.append(fresh)
                online = self._push_pending()
        self.catch_up()  # outside the lock: the events are in the log, and the next writer reads them first
        return {"accepted": int(len(fresh)), "duplicates": int(len(events) - len(fresh)), "online": online}

    def _push_pending(self) -> bool:
        """Push to the online store every logged event it does not hold yet (the log's mark
        for this store version), then move the mark; False if the store refused them (they
        stay pending, in the log, for the next push). Call inside the log's lock."""
        from features.live import update_items, update_lm_profiles, update_users

        stored = self.params.features.store
        # The store's name where it lives: the same version may live in two places.
        where = stored.redis if stored.profile == "production" else str(Path(stored.local_dir).resolve())
        store_version = f"{stored.project}@{where}"
        start = self.log.pushed(store_version)
        if start >= self.log.size():
            return True
        events, end = self.log.read_from(start)
        try:
            if len(events):
                update_users(self.store, events, self.bundle.items, self.feature_params)
                update_items(self.store, events, self.feature_params)
                update_lm_profiles(self.store, events, self.vectors.item_ids, self.vectors.vectors, self.feature_params)
        except Exception as error:  # noqa: BLE001 - logged durably already; report, do not fail
            log.warning("online store push failed (%s); %d events kept in %s for the next push", error, len(events), self.log.path)
            return False
        self.log.mark_pushed(store_version, end)
        return True

    def catch_up(self) -> bool:
        """Fold into memory the events logged since the last look, by this process or another;
        False when the log cannot be read (answers then come from what memory holds)."""
        try:
            if self.log.size() == self._offset:
                return True
            with self._lock:
                events, self._offset = self.log.read_from(self._offset)
                if len(events):
                    self._fold_memory(events)
                    self._fold_item_state(events)
        except OSError as error:
            log.warning("event log %s unreadable (%s): answering from memory", self.log.path, error)
            return False
        return True

    def _fold_item_state(self, events: pd.DataFrame) -> None:
        """What the online push wrote for these items, computed from the same state."""
        from features.live import fold_items

        item_ids = np.unique(events["item_id"].to_numpy())
        current = self.item_state.reindex(item_ids).rename_axis("item_id").reset_index()
        rows = fold_items(current, events, self.feature_params).set_index("item_id").drop(columns="event_timestamp")
        self.item_state = pd.concat([self.item_state.drop(index=rows.index, errors="ignore"), rows])
        self._item_cache = None

    def _fold_memory(self, events: pd.DataFrame) -> None:
        self.seen.add(events)
        seconds = seconds_of(events["timestamp"])
        cols = self.columns(events["item_id"].to_numpy())
        users = events["user_id"].to_numpy()
        for user in np.unique(users):
            mine = (users == user) & (cols >= 0)
            old_cols, old_seconds = self.histories.get(self.user_key(user), (np.empty(0, np.int64), np.empty(0)))
            new_cols, new_seconds = np.r_[old_cols, cols[mine]], np.r_[old_seconds, seconds[mine]]
            order = np.argsort(new_seconds, kind="stable")
            self.histories[self.user_key(user)] = (new_cols[order], new_seconds[order])
        known = cols >= 0
        later = max(self._pop_at, float(seconds.max()))
        half_life = self.train.pop_half_life_days
        pop = self.pop * exponential((later - self._pop_at) / SECONDS_PER_DAY, half_life)
        np.add.at(pop, cols[known], exponential((later - seconds[known]) / SECONDS_PER_DAY, half_life))
        self.pop, self._pop_at = pop, later

    def active_users(self, n: int) -> list:
        """The ``n`` users with the most events (the demo page's picker)."""
        counts = sorted(((len(cols), user) for user, (cols, _) in self.histories.items()), reverse=True)
        return [user for _, user in counts[:n]]

    def info(self) -> dict:
        weights = self.feature_params.event_weights
        return {"model": self.bundle.model, "kind": self.bundle.kind, "dataset": self.params.data.dataset,
                "users": len(self.histories), "items": int(len(self.item_ids)),
                "now": pd.Timestamp(self.now, unit="s", tz="UTC").isoformat(), "clock": self.params.serving.clock.kind,
                "event_types": sorted(weights, key=lambda t: (-weights[t], t)),
                "event_log": {"set_aside": dict(self.log.rejected), "quarantine": str(self.log.quarantine)},
                "hp": self.bundle.hp}


def _since(started: float, name: str = "total") -> dict[str, float]:
    return {name: round((time.perf_counter() - started) * 1000, 2)}
