"""Events encoded for models: dense user and item indices, times and a sparse matrix.

Every model is fitted on one ``Interactions`` (the fitting data of a protocol) and ranks the
items it knows: the items seen in the fitting data, in sorted id order.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from features.contract import seconds_of
from features.decay import SECONDS_PER_DAY



@dataclass(frozen=True)
class Interactions:
    """Fitting data.

    Attributes:
        user_ids: sorted distinct user ids; row ``u`` of every matrix is ``user_ids[u]``.
        item_ids: sorted distinct item ids; column ``i`` is ``item_ids[i]``.
        users: per event, its user's row.
        items: per event, its item's column.
        seconds: per event, epoch seconds.
        values: per event, the event's value (e.g. the rating).
        now: reference time for decay: the latest event, never the wall clock, so that a
            model fitted twice on the same data is the same model.
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    users: np.ndarray
    items: np.ndarray
    seconds: np.ndarray
    values: np.ndarray
    now: float

    @classmethod
    def from_events(cls, events: pd.DataFrame) -> "Interactions":
        user_ids, users = np.unique(events["user_id"].to_numpy(), return_inverse=True)
        item_ids, items = np.unique(events["item_id"].to_numpy(), return_inverse=True)
        seconds = seconds_of(events["timestamp"])
        return cls(
            user_ids=user_ids,
            item_ids=item_ids,
            users=users.astype(np.int32),
            items=items.astype(np.int32),
            seconds=seconds,
            values=events["value"].to_numpy(dtype=np.float32),
            now=float(seconds.max()) if len(seconds) else 0.0,
        )

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def age_days(self) -> np.ndarray:
        """Per event, days before ``now`` (never negative)."""
        return np.maximum(self.now - self.seconds, 0.0) / SECONDS_PER_DAY

    def matrix(self, weights: np.ndarray | None = None, *, binary: bool = True) -> sp.csr_matrix:
        """User x item matrix. With ``binary`` each pair counts once (implicit feedback);
        with ``weights`` repeated pairs are summed."""
        data = np.ones(len(self.users), dtype=np.float32) if weights is None else weights.astype(np.float32)
        matrix = sp.csr_matrix((data, (self.users, self.items)), shape=(self.n_users, self.n_items))
        matrix.sum_duplicates()
        if binary and weights is None:
            matrix.data[:] = 1.0
        return matrix

    def rows_of(self, user_ids: np.ndarray) -> np.ndarray:
        """Row of each user id; -1 for users absent from the fitting data."""
        return positions(self.user_ids, user_ids)

    def columns_of(self, item_ids: np.ndarray) -> np.ndarray:
        """Column of each item id; -1 for items absent from the fitting data."""
        return positions(self.item_ids, item_ids)


def positions(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Index of each of ``ids`` in ``sorted_ids``; -1 where absent."""
    ids = np.asarray(ids)
    pos = np.searchsorted(sorted_ids, ids)
    pos = np.clip(pos, 0, max(len(sorted_ids) - 1, 0))
    found = (len(sorted_ids) > 0) & (sorted_ids[pos] == ids) if len(sorted_ids) else np.zeros(len(ids), bool)
    return np.where(found, pos, -1).astype(np.int64)
