"""What the language model adds: user profiles in text space, the LM score, LM neighbours
over item vectors from ``models.embeddings``.

A user's profile is the decay-weighted mean of the vectors of the items they touched;
``LM_score(u, i) = cosine(profile(u), vector(i))``. Numerator and denominator of the mean
decay by the same factor, so a profile computed at the user's last event holds at any later
time: Feast can store it as is.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from features.decay import SECONDS_PER_DAY, exponential
from features.ids import python_ids
from models.baselines import CombinedScorer, DecayedItemKNN, Recommender
from models.interactions import Interactions


@dataclass(frozen=True)
class ItemVectors:
    """Unit vectors of items, row ``i`` for ``item_ids[i]`` (sorted ids)."""

    item_ids: np.ndarray
    vectors: np.ndarray

    def aligned(self, item_ids: np.ndarray) -> np.ndarray:
        """Vectors for ``item_ids`` in that order; zeros for items without a vector."""
        pos = np.searchsorted(self.item_ids, item_ids)
        pos = np.clip(pos, 0, len(self.item_ids) - 1)
        found = self.item_ids[pos] == item_ids
        out = np.zeros((len(item_ids), self.vectors.shape[1]), dtype=np.float32)
        out[found] = self.vectors[pos[found]]
        return out


def normalise(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix, dtype=np.float32), where=norms > 0).astype(np.float32)


def profiles(data: Interactions, item_vectors: np.ndarray, half_life_days: float) -> np.ndarray:
    """(n_users, dim) unit profiles: each user's items' vectors weighted by 2^(-age/h).

    Ages are measured from each user's own last event (the profile holds at any later time,
    and a long-idle user keeps a profile instead of underflowing to zero)."""
    last = np.full(data.n_users, -np.inf)
    np.maximum.at(last, data.users, data.seconds)
    age_days = (last[data.users] - data.seconds) / SECONDS_PER_DAY
    weights = exponential(age_days, half_life_days).astype(np.float32)
    matrix = sp.csr_matrix((weights, (data.users, data.items)), shape=(data.n_users, data.n_items))
    return normalise(np.asarray(matrix @ item_vectors))


@dataclass
class LMScore(Recommender):
    """LM score alone: cosine between the user's decayed text profile and each item."""

    name: ClassVar[str] = "lm"
    needs_vectors: ClassVar[bool] = True
    half_life_days: float = 30.0
    item_vectors: ItemVectors | None = field(default=None, repr=False)

    def _fit(self, data: Interactions) -> None:
        if self.item_vectors is None:
            raise ValueError("LMScore needs item_vectors (models.embeddings.embed_items)")
        self.vectors_ = normalise(self.item_vectors.aligned(data.item_ids))
        self.profiles_ = profiles(data, self.vectors_, self.half_life_days)

    def _score_batch(self, rows: np.ndarray) -> np.ndarray:
        return self.profiles_[rows] @ self.vectors_.T


@dataclass
class DecayedCFWithLM(CombinedScorer):
    """The textbook combined scorer with its LM part filled: decayed item-CF + alpha x LM."""

    name: ClassVar[str] = "itemknn_decay_lm"
    needs_vectors: ClassVar[bool] = True
    k: int = 250
    half_life_days: float = 7.0
    lm_half_life_days: float = 30.0
    item_vectors: ItemVectors | None = field(default=None, repr=False)

    def _fit(self, data: Interactions) -> None:
        self.base = DecayedItemKNN(k=self.k, half_life_days=self.half_life_days)
        self.lm_ = LMScore(half_life_days=self.lm_half_life_days, item_vectors=self.item_vectors).fit(data)
        self.lm_scores = self.lm_.score
        super()._fit(data)


def neighbours(item_vectors: ItemVectors, item_id, k: int) -> list[tuple]:
    """The k items whose text is nearest (cosine); works for items nobody has touched yet."""
    pos = int(np.searchsorted(item_vectors.item_ids, item_id))
    if pos >= len(item_vectors.item_ids) or item_vectors.item_ids[pos] != item_id:
        raise KeyError(f"item {item_id} has no vector")
    sims = item_vectors.vectors @ item_vectors.vectors[pos]
    sims[pos] = -np.inf
    top = np.argsort(-sims, kind="stable")[:k]
    ids = python_ids(item_vectors.item_ids[top])
    return [(i, float(sims[t])) for i, t in zip(ids, top)]
