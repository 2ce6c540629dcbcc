"""How each kind of champion (``models.servable``) ranks for the engine.

The scorer ranks candidates whose features come from the state reader training uses
(``models.signals``); the sequence model ranks the whole catalogue from the user's recent
items. Each answers a group of users with ``rank`` and says what ``/explain`` can add; the
engine picks one by the champion's kind, once, at start.

A ranked item is ``(column, score, source, reason)``: ``source`` is what the answer shows,
``reason`` the source whose reason text fits (a sequence pick is explained by text).
"""
from __future__ import annotations

import threading

import numpy as np

from features.ids import python_ids
from features.interest import decayed_count
from features.lm_profile import unit_profiles
from models.baselines import EASE
from models.candidates import SOURCES
from models.interactions import Interactions
from models.ranking_data import candidates, feature_names
from models.signals import Signals, Sources, read, select
from serving.signal_cache import SignalCache

Ranked = tuple[int, float, str, str]


class ScorerRanking:
    def __init__(self, engine, model, data: Interactions) -> None:
        import torch

        self.engine, self.net, self._torch = engine, model.net, torch
        wanted = feature_names(engine.params.data.repeats)
        if model.features != wanted:
            raise ValueError(f"the champion scores features {list(model.features)}, but this bundle's data set (data.repeats: "
                             f"{str(engine.params.data.repeats).lower()}) makes {list(wanted)}: retrain it on this data set")
        hp, train = engine.bundle.hp, engine.train
        ease = EASE(reg=float(hp["ease_reg"]), max_items=train.ease_max_items).fit(data)
        self.sources = Sources(engine.knn, ease, engine.unit_vectors, train.candidates.recent_items)
        if train.candidates.pooled(len(engine.item_ids)):
            # Popularity's order follows live events (``Engine.pop_order``); the index and
            # the neighbour lists depend on the item vectors alone.
            near = engine.bundle.neighbourhood
            if near is None or not np.array_equal(near.item_ids, engine.item_ids):
                near = None  # the bundle has none for this catalogue (other settings): built here
            self.sources = self.sources.with_index(train.candidates, near)
        self.alpha = float(hp.get("alpha", 0.0))
        row_bytes = 4 * len(engine.item_ids) * np.dtype(np.float32).itemsize
        self.signal_cache = SignalCache(int(engine.params.serving.signal_cache_mb * 2**20 // row_bytes))
        with torch.no_grad():  # the catalogue's projection, once (ScorerNet.score_projected)
            self._projected = self.net.proj(torch.from_numpy(engine.unit_vectors))

    def signals(self, hist: Interactions, stored: dict[str, list], now: float, profile: np.ndarray | None = None) -> Signals:
        """The candidate sources' scores and the users' state at ``now``, through training's
        reader (``models.signals.read``): row ``r`` is ``hist``'s user ``r``, whose stored
        state is ``stored``'s row ``r`` (``profile``: their unit LM profiles, when the caller
        has them already)."""
        e = self.engine
        events = decayed_count(_floats(stored["events_decayed"]), _floats(stored["last_event_s"]), now, e.feature_params)
        if profile is None:
            profile = unit_profiles(stored, e.unit_vectors.shape[1])
        shares = stored_shares(stored, len(e.categories))
        if self.sources.is_pooled:
            # A pool costs what a cached row would: nothing to keep between requests.
            return read(hist, self.sources.pooled(hist, profile), e.pop.astype(np.float32), shares, events, now,
                        e.params.data.repeats, e.pop_order())
        users = python_ids(hist.user_ids)
        counts = np.bincount(hist.users, minlength=len(users))
        # The history in memory, where ``hist`` was made from it; None where events were
        # folded in since (another thread) or the user has none: nothing kept applies.
        current = [e.histories.get(u) for u in users]
        current = [h if h is not None and len(h[0]) == n else None for h, n in zip(current, counts)]

        def compute(missing: list[int], profiles: np.ndarray) -> list[np.ndarray]:
            sub = hist if len(missing) == len(users) else e.histories_of(missing)
            return self.sources.scores(sub, profiles)

        scores = self.signal_cache.rows(users, current, profile, len(e.item_ids), compute)
        # Popularity decayed to ``now`` would not change its order: it is read as it stands.
        return read(hist, scores, e.pop.astype(np.float32), shares, events, now, e.params.data.repeats, e.pop_order())

    def scored_candidates(self, hist: Interactions, stored: dict[str, list], now: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(item columns, sources, scores)``, each ``(users, width)``: every user's
        candidates, padding marked by column -1 and score -inf."""
        e, torch = self.engine, self._torch
        profile = unit_profiles(stored, e.unit_vectors.shape[1])
        short, long = e.item_features(now)
        items, source, features = candidates(self.signals(hist, stored, now, profile), e.item_share, short, long,
                                             self.alpha, e.train.candidates)
        with torch.no_grad():
            scores = self.net.score_projected(
                torch.from_numpy(features), torch.from_numpy(profile), torch.from_numpy(items), self._projected).numpy()
        scores[items < 0] = -np.inf
        return items, source, scores

    def rank(self, hist: Interactions, stored: dict[str, list], asks: list, now: float) -> list[list[Ranked]]:
        """Each ask's top ``k`` candidates (minus ``exclude``); row ``r`` of ``hist`` is ``asks[r]``'s user."""
        items, source, scores = self.scored_candidates(hist, stored, now)
        item_keys = self.engine.item_keys
        lists = []
        for r, ask in enumerate(asks):
            out = []
            for j in np.argsort(-scores[r], kind="stable"):
                if items[r, j] < 0:  # padding, sorted last
                    break
                if ask.exclude and item_keys[items[r, j]] in ask.exclude:
                    continue
                name = SOURCES[source[r, j]]
                out.append((int(items[r, j]), float(scores[r, j]), name, name))
                if len(out) == ask.k:
                    break
            lists.append(out)
        return lists

    def explain(self, hist: Interactions, stored: dict[str, list], now: float, column: int) -> dict:
        """The model's score, rank and source for ``column`` among the user's candidates."""
        if column < 0:
            return {}
        items, source, scores = (a[0] for a in self.scored_candidates(hist, stored, now))
        hit = np.flatnonzero(items == column)
        if not len(hit):
            return {"model_score": None, "rank": None, "source": None, "reason": "not among the user's candidates"}
        j = int(hit[0])
        seen, times = np.unique(hist.items, return_counts=True)
        return {"model_score": round(float(scores[j]), 4), "rank": int((scores > scores[j]).sum()) + 1,
                "source": SOURCES[source[j]], "reason": self.engine.why.one(SOURCES[source[j]], seen, column, times)}


class SequenceRanking:
    def __init__(self, engine, model, data: Interactions) -> None:
        self.engine, self.model = engine, model
        self._lock = threading.Lock()  # bind() points the shared model at one user's history

    def rank(self, hist: Interactions, stored: dict[str, list], asks: list, now: float) -> list[list[Ranked]]:
        """Each ask's top ``k`` items of the whole catalogue (minus ``exclude``, and minus the
        user's own items unless the data set repeats)."""
        return [self._one(select(hist, np.array([r])), ask.k, ask.exclude) for r, ask in enumerate(asks)]

    def _one(self, hist: Interactions, k: int, exclude: frozenset[int]) -> list[Ranked]:
        with self._lock:
            scores = self.model.bind(hist).score(np.array([0]))[0].astype(np.float64)
        if not self.engine.params.data.repeats:
            scores[np.unique(hist.items)] = -np.inf
        excluded = self.engine.columns(exclude)
        scores[excluded[excluded >= 0]] = -np.inf
        top = np.argsort(-scores, kind="stable")[:k]
        return [(int(c), float(scores[c]), "sequence", "lm") for c in top if np.isfinite(scores[c])]

    def explain(self, hist: Interactions, stored: dict[str, list], now: float, column: int) -> dict:
        return {}  # no per-item score beside the ranking itself


RANKINGS = {"scorer": ScorerRanking, "sequence": SequenceRanking}


def _floats(values: list) -> np.ndarray:
    """A stored numeric feature as float64, 0 where missing."""
    return np.nan_to_num(np.array([np.nan if v is None else v for v in values], dtype=np.float64), nan=0.0)


def stored_shares(stored, n: int) -> np.ndarray:
    """Each user's stored decayed interest share over ``n`` categories (zeros where none)."""
    values = stored["interest_share"]
    out = np.zeros((len(values), n), dtype=np.float32)
    for i, value in enumerate(values):
        if value is not None and len(value) == n:
            out[i] = value
    return out
