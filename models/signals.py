"""What candidates and features are made of: the one reader of decayed state that training
and serving share.

Training reads a ``models.ranking_data.History`` (Feast point-in-time state); the service
reads a user's live events and online state. Both hand their state arrays to ``read``, so
the scorer sees in serving exactly what it saw in training, by construction.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from models.ann import Neighbourhood
from models.baselines import EASE, DecayedItemKNN, minmax_rows
from models.interactions import Interactions
from models.pool import Pooled, RowScores

if TYPE_CHECKING:
    from flows.config import CandidateSettings


@dataclass
class Signals:
    """Every item's scores under each source and the users' decayed state, for some users."""

    seen: sp.csr_matrix  # (rows, n_items) items in each user's history
    exclude: sp.csr_matrix | None  # items no candidate may be: ``seen``, or None where the data set repeats
    own: OwnHistory | None  # where the data set repeats: each user's events with each of their items
    # Dense rows of a small catalogue; None where ``pooled`` holds a large one's scores.
    cf: np.ndarray | None  # (rows, n_items) decayed item-CF, min-max per row
    ease: np.ndarray | None  # (rows, n_items) EASE, min-max per row
    lm: np.ndarray | None  # (rows, n_items) cosine of the LM profile and each item
    lm_recent: np.ndarray | None  # (rows, n_items) best cosine with the user's recent items
    pooled: Pooled | None  # a large catalogue's scores (``models.pool``)
    pop: np.ndarray  # (n_items,) decayed popularity (the popularity source)
    pop_order: np.ndarray  # item columns by ``pop``, best first, ties by column
    user_share: np.ndarray  # (rows, n_categories) decayed interest share
    user_events: np.ndarray  # (rows,) decayed event count
    user_last: np.ndarray  # (rows,) epoch seconds of the latest event
    now: float  # the moment the state is taken at


@dataclass
class OwnHistory:
    """Each (user row, item column) pair of a history: its events and the latest one."""

    keys: np.ndarray  # sorted row * n_items + column
    events: np.ndarray  # events of each pair
    last: np.ndarray  # epoch seconds of each pair's latest event

    @classmethod
    def of(cls, hist: Interactions) -> OwnHistory:
        keys, inverse = np.unique(hist.users.astype(np.int64) * hist.n_items + hist.items, return_inverse=True)
        last = np.full(len(keys), -np.inf)
        np.maximum.at(last, inverse, hist.seconds)
        return cls(keys, np.bincount(inverse, minlength=len(keys)).astype(np.float64), last)

    def at(self, columns: np.ndarray, n_items: int) -> tuple[np.ndarray, np.ndarray]:
        """``(events, last)`` of row ``r``'s pair with each of ``columns[r]`` (0 and -inf where none)."""
        if not len(self.keys):
            return np.zeros(columns.shape), np.full(columns.shape, -np.inf)
        wanted = np.arange(len(columns), dtype=np.int64)[:, None] * n_items + columns
        pos = np.minimum(np.searchsorted(self.keys, wanted), len(self.keys) - 1)
        hit = (columns >= 0) & (self.keys[pos] == wanted)
        return np.where(hit, self.events[pos], 0.0), np.where(hit, self.last[pos], -np.inf)


@dataclass
class Sources:
    """The fitted candidate sources over one catalogue: item-CF, EASE and the items' unit
    LM vectors (``recent_items``: how many of a user's latest items ``lm_recent`` looks at);
    for a large catalogue, its LM vector index and each item's LM neighbours (``near``)."""

    knn: DecayedItemKNN
    ease: EASE
    unit_vectors: np.ndarray  # (n_items, dim)
    recent_items: int
    near: Neighbourhood | None = None  # the items' vector index and LM neighbour lists

    def with_index(self, cfg: CandidateSettings, near: Neighbourhood | None = None) -> Sources:
        """These sources with what pooled candidates need: the vector index over the items
        and each item's LM neighbours (``near``, else built here)."""
        if near is None:
            near = Neighbourhood.build(np.arange(len(self.unit_vectors)), self.unit_vectors, cfg.ann)
        return replace(self, near=near)

    @property
    def is_pooled(self) -> bool:
        return self.near is not None

    def pooled(self, hist: Interactions, profiles: np.ndarray) -> Pooled:
        """The scores of ``hist``'s users, each source kept to what it proposes (``models.pool``)."""
        n = hist.n_items
        ease = self.ease.score_kept(hist)
        return Pooled(cf=RowScores.minmax(self.knn.score_histories_sparse(hist), n),
                      ease=RowScores.dense_columns(ease, self.ease.columns_, n), profiles=np.asarray(profiles, np.float32),
                      recent=latest_items(hist, self.recent_items), unit_vectors=self.unit_vectors, near=self.near)

    def scores(self, hist: Interactions, profiles: np.ndarray) -> list[np.ndarray]:
        """``[cf, ease, lm, lm_recent]``: each ``(users of hist, n_items)`` float32, row ``r``
        depending on nothing but user ``r``'s events and unit LM profile ``profiles[r]``."""
        m = self.recent_items
        recent = latest_items(hist, m)
        recent_vectors = self.unit_vectors[np.maximum(recent, 0)] * (recent >= 0)[..., None]
        rows = len(profiles)
        # One BLAS product for the profiles and the recent items of a batch of users: it is
        # memory-bound, one pass over the catalogue's vectors (einsum would not use BLAS: 5x slower).
        cosines = np.concatenate([np.asarray(profiles, np.float32), recent_vectors.reshape(-1, profiles.shape[1])]) @ self.unit_vectors.T
        return [
            minmax_rows(self.knn.score_histories(hist)),
            minmax_rows(self.ease.score_histories(hist)),
            cosines[:rows],
            cosines[rows:].reshape(rows, m, -1).max(axis=1),
        ]


def read(hist: Interactions, scores: list[np.ndarray] | Pooled, pop: np.ndarray, user_share: np.ndarray,
         user_events: np.ndarray, now: float, repeats: bool = False, pop_order: np.ndarray | None = None) -> Signals:
    """The signals of ``hist``'s users at ``now``, from ``Sources.scores`` (or ``Sources.pooled``)
    of the same users and their decayed state (interest share, decayed event count; ``pop``:
    the catalogue's, ``pop_order`` its order where the caller keeps one). ``repeats``
    (``data.repeats``): a user's own past items may be candidates."""
    last = np.full(hist.n_users, -np.inf)
    np.maximum.at(last, hist.users, hist.seconds)
    pooled = scores if isinstance(scores, Pooled) else None
    cf, ease, lm, lm_recent = (None,) * 4 if pooled is not None else scores
    seen = hist.matrix()
    seen.sort_indices()
    if pop_order is None:
        pop_order = np.argsort(-np.asarray(pop, np.float32), kind="stable")
    return Signals(seen=seen, exclude=None if repeats else seen, own=OwnHistory.of(hist) if repeats else None, cf=cf, ease=ease, lm=lm,
                   lm_recent=lm_recent, pooled=pooled, pop=pop, pop_order=pop_order, user_share=user_share, user_events=user_events, user_last=last,
                   now=now)


def latest_items(data: Interactions, m: int) -> np.ndarray:
    """Each user's ``m`` latest distinct item columns, newest first, -1 padding."""
    order = np.lexsort((-data.seconds, data.users))
    users, items = data.users[order], data.items[order]
    out = np.full((data.n_users, m), -1, dtype=np.int64)
    starts = np.searchsorted(users, np.arange(data.n_users))
    ends = np.searchsorted(users, np.arange(data.n_users), side="right")
    for u, (a, b) in enumerate(zip(starts, ends)):
        _, first = np.unique(items[a:b], return_index=True)
        latest = items[a:b][np.sort(first)][:m]
        out[u, : len(latest)] = latest
    return out


def select(data: Interactions, rows: np.ndarray) -> Interactions:
    """The events of ``data``'s users at ``rows``, row ``r`` being ``rows[r]``; same items and ``now``."""
    new = np.full(data.n_users, -1, dtype=np.int64)
    new[rows] = np.arange(len(rows))
    keep = new[data.users] >= 0
    return Interactions(user_ids=data.user_ids[rows], item_ids=data.item_ids, users=new[data.users[keep]].astype(np.int32),
                        items=data.items[keep], seconds=data.seconds[keep], values=data.values[keep], now=data.now)
