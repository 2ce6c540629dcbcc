"""Candidates of a large catalogue, from structures whose cost per user does not grow with it.

Up to ``candidates.ann.exact_max_items`` items every source scores every item in a dense row
(``models.signals.Sources.scores``), and a user's candidates are each row's top-N. Those rows
made the cost of a served request and of a training chunk linear in the catalogue: at 20k
items, building one trial's training candidates took 11 of its 12 minutes, half of it in
full-row partitions and a third in full-row sorts. Above that size each source proposes
its own top-N from what it has anyway:

- item-CF: the sparse product of the user's decayed profile and the top-k similarity;
- EASE: its kept columns (``train.ease_max_items``), every other item scoring alike;
- LM: the nearest items to the user's profile in the vector index (``models.ann``), and
  each recent item's neighbour list, precomputed once per catalogue;
- popularity: the catalogue's order, sorted once.

Every value a feature reads is then computed at the candidates with the dense rows' maths:
a candidate's cf and ease (scaled per row over the whole catalogue), its rank under each
(ties by column) and its two LM cosines are what the dense path gives it, to float rounding
of the cosines. What differs is which items become candidates: approximate neighbours, and
the CF list's ``cf + alpha x LM`` ranked over the CF and LM proposals rather than over every
item (the LM part min-max scaled over those proposals).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from models.ann import Neighbourhood
from models.metrics import best, order_keys

if TYPE_CHECKING:
    from flows.config import CandidateSettings

GATHER_ROWS = 32  # rows whose candidates' LM vectors are gathered at once (``Pooled.lm_at``)


@dataclass
class RowScores:
    """Scores of ``n_items`` columns per row: the stored ones in ``stored``, every other
    column of row ``r`` scoring ``fill[r]``."""

    stored: sp.csr_matrix  # sorted indices, no explicit zeros standing for "not stored"
    fill: np.ndarray  # (rows,) float32
    n_items: int

    def __post_init__(self) -> None:
        self.keys = _keys(self.stored)  # every lookup searches them

    @classmethod
    def minmax(cls, stored: sp.csr_matrix, n_items: int) -> RowScores:
        """Each row scaled to [0, 1] over all ``n_items`` columns, the columns not stored
        scoring 0 before scaling: ``models.baselines.minmax_rows`` of the dense rows."""
        stored = sp.csr_matrix(stored, dtype=np.float32)
        stored.sort_indices()
        rows = stored.shape[0]
        counts = np.diff(stored.indptr)
        full = counts == n_items
        low, high = np.zeros(rows, np.float32), np.zeros(rows, np.float32)
        has = counts > 0
        starts = stored.indptr[:-1][has]
        low[has] = np.minimum.reduceat(stored.data, starts) if len(starts) else low[has]
        high[has] = np.maximum.reduceat(stored.data, starts) if len(starts) else high[has]
        low, high = np.where(full, low, np.minimum(low, 0)), np.where(full, high, np.maximum(high, 0))
        spread = (high - low).astype(np.float32)
        per_entry = np.repeat(np.arange(rows), counts)
        ok = spread > 0
        data = np.divide(stored.data - low[per_entry], spread[per_entry], out=np.zeros_like(stored.data), where=ok[per_entry])
        fill = np.divide(np.float32(0) - low, spread, out=np.zeros(rows, np.float32), where=ok)
        return cls(sp.csr_matrix((data, stored.indices, stored.indptr), shape=stored.shape), fill.astype(np.float32), n_items)

    @classmethod
    def dense_columns(cls, values: np.ndarray, columns: np.ndarray, n_items: int) -> RowScores:
        """Min-max scaled scores of ``values[:, j]`` at ``columns[j]`` (sorted), 0 elsewhere."""
        rows, width = values.shape
        stored = sp.csr_matrix((values.ravel().astype(np.float32), np.tile(columns, rows), np.arange(rows + 1) * width),
                               shape=(rows, n_items))
        stored.has_sorted_indices = True  # each row holds ``columns``, sorted
        return cls.minmax(stored, n_items)

    def at(self, columns: np.ndarray) -> np.ndarray:
        """``(rows, w)`` float32 scores of row ``r`` at ``columns[r]`` (column -1 scores fill)."""
        found, pos = _find(self.keys, self.n_items, np.arange(len(columns))[:, None], columns)
        out = np.broadcast_to(self.fill[:, None], columns.shape).astype(np.float32)
        out[found] = self.stored.data[pos[found]]
        return out

    def ranks(self, columns: np.ndarray, values: np.ndarray | None = None) -> np.ndarray:
        """The rank (0 = best) of each of ``columns[r]`` in row ``r`` over all columns, ties
        by lower column: ``models.ranking_data.ranks_of`` of the dense rows. ``values``:
        ``at(columns)``, when the caller has it."""
        values = self.at(columns) if values is None else values
        out = np.empty(columns.shape, np.float32)
        m = self.stored
        for r in range(len(columns)):
            a, b = m.indptr[r], m.indptr[r + 1]
            cols, keys = m.indices[a:b].astype(np.int64), order_keys(m.data[a:b], m.indices[a:b])
            keys.sort()
            c, v = columns[r].astype(np.int64), values[r]
            ahead = np.searchsorted(keys, order_keys(v, c))  # stored columns ranked before each
            implicit = self.n_items - (b - a)
            below = c - np.searchsorted(cols, c)  # columns under c that are not stored
            fill = self.fill[r]
            out[r] = ahead + np.where(fill > v, implicit, np.where(fill == v, below, 0))
        return out

    def top(self, n: int, exclude: sp.csr_matrix | None) -> np.ndarray:
        """Per row, the ``n`` best stored columns scoring above ``fill`` (the rest of the
        catalogue ties below them, so it proposes nothing), minus ``exclude``; -1 padded."""
        m = self.stored
        rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
        keep = m.data > self.fill[rows]
        if exclude is not None:
            keep &= ~_find(_keys(exclude), self.n_items, rows, m.indices)[0]
        out = np.full((m.shape[0], n), -1, np.int64)
        for r in range(m.shape[0]):
            a, b = m.indptr[r], m.indptr[r + 1]
            ok = keep[a:b]
            top = best(m.data[a:b][ok], m.indices[a:b][ok], n)
            out[r, : len(top)] = top
        return out


@dataclass
class Pooled:
    """Every source's scores for some users of a large catalogue (``Sources.pooled``)."""

    cf: RowScores
    ease: RowScores
    profiles: np.ndarray  # (rows, dim) unit LM profiles
    recent: np.ndarray  # (rows, recent_items) latest item columns, -1 padded
    unit_vectors: np.ndarray  # (n_items, dim)
    near: Neighbourhood

    def lm_at(self, columns: np.ndarray, recent: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """``(lm, lm_recent)`` at ``columns[r]``: the cosine of row ``r``'s profile with each,
        and (with ``recent``) each one's best cosine with row ``r``'s recent items (0 with none)."""
        lm = np.empty(columns.shape, np.float32)
        best = np.empty(columns.shape, np.float32) if recent else None
        # The candidates' vectors a few rows at a time: gathered all at once, 1,024 rows of
        # 350 candidates are 550 MB of fresh pages, and the page faults cost more than the maths.
        for a in range(0, len(columns), GATHER_ROWS):
            b = min(a + GATHER_ROWS, len(columns))
            picked = self.unit_vectors[np.maximum(columns[a:b], 0)]
            lm[a:b] = np.matmul(picked, self.profiles[a:b, :, None])[..., 0]
            if recent:
                latest = self.unit_vectors[np.maximum(self.recent[a:b], 0)] * (self.recent[a:b] >= 0)[..., None]
                best[a:b] = np.matmul(latest, picked.transpose(0, 2, 1)).max(axis=1)
        return lm, best


def lists(p: Pooled, exclude: sp.csr_matrix | None, alpha: float, cfg: CandidateSettings) -> list[np.ndarray]:
    """The CF, EASE and LM sources' ranked lists (``models.candidates.SOURCES`` order; the
    popularity list is ``first_unseen``'s), -1 padded; none holds a column of ``exclude``'s
    row (None: any may come)."""
    seen = 0 if exclude is None else int(np.diff(exclude.indptr).max(initial=0))
    n_items = p.unit_vectors.shape[0]
    # CF and LM proposals together, then ranked by cf + alpha x LM as the dense rows are,
    # LM scaled by its row's extremes over the whole catalogue as there (the best cosine is
    # the search's first, the worst the first of a search for the negated profile): scaled
    # over the proposals alone, ml-1m's P1 candidates (pooled at 3,706 items) recalled 0.370
    # of the test items against the dense rows' 0.408, and 0.408 scaled as here.
    cf_top = p.cf.top(cfg.cf, exclude)
    ease_list = p.ease.top(cfg.ease, exclude)
    exclude = None if exclude is None else _keys(exclude)
    lm_scores, lm_top = p.near.index.search(p.profiles, cfg.cf + min(seen, cfg.cf))
    lm_top = _unique_rows(np.where(_member_cols(exclude, n_items, lm_top), -1, lm_top))
    cf_part = p.cf.at(np.maximum(cf_top, 0))
    # LM cosines of the CF proposals: the search gave the LM ones' already.
    cf_lm = p.lm_at(cf_top, recent=False)[0]
    proposed = np.concatenate([cf_top, lm_top], axis=1)
    lm_values = np.concatenate([cf_lm, lm_scores], axis=1)
    # A narrow search: the floor only scales, and at ef_search it cost as much as the list.
    low = -p.near.index.search(-p.profiles, 1, ef=cfg.ann.ef_floor)[0][:, :1]
    combined = np.concatenate([cf_part, p.cf.at(np.maximum(lm_top, 0))], axis=1) + np.float32(alpha) * _minmax_between(
        lm_values, low, lm_scores[:, :1])
    cf_list = _ranked(_unique_rows(proposed), combined, cfg.cf)
    lm_list = _ranked(*_recent_neighbours(p, exclude), cfg.lm)
    return [cf_list, ease_list, lm_list]


def first_unseen(order: np.ndarray, exclude: sp.csr_matrix | None, rows: int, n: int) -> np.ndarray:
    """Per row, the first ``n`` of ``order`` (item columns) that are not in ``exclude``'s row
    (None: any may come), -1 padded. Popularity's list, a prefix of its order: what ``top_k``
    of the scores finds, for the price of ``n`` + the most seen columns, not the catalogue's."""
    most_seen = 0 if exclude is None else int(np.diff(exclude.indptr).max(initial=0))
    prefix = np.broadcast_to(order[: n + most_seen], (rows, min(n + most_seen, len(order))))
    keys = None if exclude is None else _keys(exclude)
    return _first_valid(np.where(_member_cols(keys, len(order), prefix), -1, prefix), n)


def _recent_neighbours(p: Pooled, exclude: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Each row's recent items and their LM neighbour lists, as ``(columns, scores)``: an
    item's score is its best cosine with a recent item whose list holds it (the recent items
    themselves score 1 and come first where the data set repeats)."""
    rows, m = p.recent.shape
    has = p.recent >= 0
    lists = np.where(has[..., None], p.near.neighbours[np.maximum(p.recent, 0)], -1).reshape(rows, -1)
    list_scores = np.where(has[..., None], p.near.scores[np.maximum(p.recent, 0)], -np.inf).reshape(rows, -1)
    own = np.where(has & np.any(p.unit_vectors[np.maximum(p.recent, 0)] != 0, axis=-1), np.float32(1.0), np.float32(0.0))
    columns = np.concatenate([p.recent, lists], axis=1)
    scores = np.concatenate([np.where(has, own, -np.inf), list_scores], axis=1).astype(np.float32)
    columns[_member_cols(exclude, p.unit_vectors.shape[0], columns) | ~np.isfinite(scores)] = -1
    # Keep each column's best score: sorted by score first, a column's first place is its best.
    order = np.argsort(-scores, axis=1, kind="stable")
    columns, scores = np.take_along_axis(columns, order, axis=1), np.take_along_axis(scores, order, axis=1)
    return _unique_rows(columns), scores


def values(p: Pooled, items: np.ndarray) -> dict[str, np.ndarray]:
    """The score features of ``items`` (union columns, -1 padded)."""
    safe = np.maximum(items, 0)
    lm, lm_recent = p.lm_at(safe)
    cf, ease = p.cf.at(safe), p.ease.at(safe)
    return {"cf": cf, "cf_rank": p.cf.ranks(safe, cf), "ease": ease, "ease_rank": p.ease.ranks(safe, ease),
            "lm": lm, "lm_recent": lm_recent}


# ---------------------------------------------------------------- row helpers


def _keys(m: sp.csr_matrix) -> np.ndarray:
    """``row * n_columns + column`` of each stored entry: sorted where ``m``'s indices are."""
    return np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr)) * m.shape[1] + m.indices


def _find(keys: np.ndarray, n_columns: int, rows: np.ndarray, columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Whether each (rows, columns) pair (broadcast) is among sorted ``keys``, and where."""
    wanted = rows.astype(np.int64) * n_columns + columns
    if not len(keys):
        return np.zeros(wanted.shape, bool), np.zeros(wanted.shape, np.int64)
    pos = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    return (keys[pos] == wanted) & (columns >= 0), pos


def _member_cols(seen: np.ndarray | None, n_columns: int, columns: np.ndarray) -> np.ndarray:
    """Whether each of ``columns[r]`` is among row ``r``'s ``seen`` keys (None: none is)."""
    if seen is None:
        return np.zeros(columns.shape, bool)
    return _find(seen, n_columns, np.arange(len(columns))[:, None], columns)[0]


def _first_per_row(rows: np.ndarray, cols: np.ndarray, n_rows: int, n: int) -> np.ndarray:
    """The first ``n`` of ``cols`` of each row (entries grouped by row, in order), -1 padded."""
    out = np.full((n_rows, n), -1, np.int64)
    starts = np.searchsorted(rows, np.arange(n_rows))
    place = np.arange(len(rows)) - starts[rows]
    ok = place < n
    out[rows[ok], place[ok]] = cols[ok]
    return out


def _first_valid(columns: np.ndarray, n: int) -> np.ndarray:
    """Each row's first ``n`` columns that are not -1, in order."""
    rows, where = np.nonzero(columns >= 0)
    return _first_per_row(rows, columns[rows, where], len(columns), n)


def _ranked(columns: np.ndarray, scores: np.ndarray, n: int) -> np.ndarray:
    """Each row's ``n`` best of ``columns`` by ``scores`` (ties by column; -1 never)."""
    out = np.full((len(columns), n), -1, np.int64)
    for r in range(len(columns)):
        ok = columns[r] >= 0
        top = best(scores[r][ok], columns[r][ok], n)
        out[r, : len(top)] = top
    return out


def _minmax_between(scores: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Each row's ``scores`` scaled from its ``(rows, 1)`` ``[low, high]`` to [0, 1] as
    ``minmax_rows`` scales a dense row (0 in constant rows, and where a profile found nothing)."""
    spread = (high - low).astype(np.float32)
    ok = np.isfinite(spread) & (spread > 0) & np.isfinite(scores)
    scaled = np.divide(scores - np.where(np.isfinite(low), low, 0), spread, out=np.zeros(scores.shape, np.float32),
                       where=np.broadcast_to(ok, scores.shape))
    return scaled.astype(np.float32)


def _unique_rows(columns: np.ndarray) -> np.ndarray:
    """``columns`` with each row's repeats after the first set to -1."""
    columns = np.asarray(columns, np.int64)
    order = np.argsort(columns, axis=1, kind="stable")
    ordered = np.take_along_axis(columns, order, axis=1)
    repeat = np.zeros(columns.shape, bool)
    repeat[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    out = columns.copy()
    np.put_along_axis(out, order, np.where(repeat, -1, ordered), axis=1)
    return out
