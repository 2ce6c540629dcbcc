"""A baseline for data sets that repeat (``data.repeats``): the user's own items again.

In grocery and consumables a user's next purchase is most often something they bought
before, and "their own items, most and most lately bought first" is the baseline that
repeat-aware recommenders are measured against (personal top-frequency). Without it a model
that may rebuy would only be compared with models that cannot.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from models.baselines import Decayed, DecayedPopularity, Recommender
from models.interactions import Interactions

# The crowd's decayed popularity ranks what the user never had, strictly below their own items.
_CROWD_SHARE = 1e-3


@dataclass
class OwnItems(Decayed, Recommender):
    """Each user's own items by the decayed sum of their events with it (``Decayed``, ages
    from ``data.now``), then every other item by decayed popularity."""

    name: ClassVar[str] = "own_items"
    half_life_days: float = 30.0

    def _fit(self, data: Interactions) -> None:
        weights = self._weigh(data.age_days(), self.half_life_days).astype(np.float32)
        own = sp.csr_matrix((weights, (data.users, data.items)), shape=(data.n_users, data.n_items))
        own.sum_duplicates()
        self.own_ = own
        crowd = DecayedPopularity(decay=self.decay, half_life_days=self.half_life_days,
                                  window_days=self.window_days, window_weights=self.window_weights).fit(data).item_scores_
        self.crowd_ = (_CROWD_SHARE * crowd / max(float(crowd.max(initial=0.0)), 1e-12)).astype(np.float32)

    def _score_batch(self, rows: np.ndarray) -> np.ndarray:
        own = self.own_[rows].toarray()
        # Own items first: shifted above the crowd's scores, which stay below _CROWD_SHARE.
        return np.where(own > 0, own + np.float32(1.0), self.crowd_[None, :]).astype(np.float32)
