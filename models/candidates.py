"""Candidate generation: the few hundred items per user that the scorer reranks.

The union of four sources, each good where the others are weak: decayed item-CF (what
people with the user's recent taste went on to), EASE (the strongest linear item model),
LM neighbours of the user's recent items (text-similar items, including ones with few
interactions) and decayed popularity (what is hot now, strong under a global time split). Whatever the scorer does, it cannot find an item
outside this set, so the set's recall is the ceiling of any reranker and is reported.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from models import metrics

SOURCES = ("cf", "ease", "lm", "pop")


def top_unseen(scores: np.ndarray, seen: sp.csr_matrix | None, n: int) -> np.ndarray:
    """Per row, the ``n`` best columns not in ``seen`` (None: any; ``metrics.top_k``: ties by index)."""
    return metrics.top_k(np.asarray(scores, dtype=np.float32), seen, n)


def union(lists: list[np.ndarray], width: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise union of ranked lists (-1 = empty), first occurrence kept, padded with -1.

    Returns:
        ``(items, source)``: ``(rows, width)`` item columns, and for each the index of the
        first list that proposed it (-1 for padding).
    """
    rows = lists[0].shape[0]
    items = np.full((rows, width), -1, dtype=np.int64)
    source = np.full((rows, width), -1, dtype=np.int8)
    stacked = np.concatenate(lists, axis=1)
    origin = np.concatenate([np.full(lst.shape[1], i, dtype=np.int8) for i, lst in enumerate(lists)])
    for r in range(rows):
        row = stacked[r]
        valid = row >= 0
        unique, first = np.unique(row[valid], return_index=True)
        order = np.sort(first)  # keep the lists' order: cf first, then lm, then pop
        chosen = row[valid][order][:width]
        items[r, : len(chosen)] = chosen
        source[r, : len(chosen)] = origin[valid][order][:width]
    return items, source


def recall(candidates: np.ndarray, truth: sp.csr_matrix) -> float:
    """Mean over users with truth of the share of their truth inside their candidates."""
    truth = sp.csr_matrix(truth)
    hits = []
    for r in range(truth.shape[0]):
        wanted = truth.indices[truth.indptr[r] : truth.indptr[r + 1]]
        if len(wanted):
            hits.append(np.isin(wanted, candidates[r]).sum() / len(wanted))
    return float(np.mean(hits)) if hits else float("nan")
