"""Per-user signal rows kept between requests.

A user's rows of ``models.signals.Sources.scores`` depend on nothing but their own events
and LM profile, so they are kept (least recently used out first, ``serving.signal_cache_mb``)
and served again while both are unchanged: the same events (the engine replaces a user's
history when events arrive, never edits it, so identity says "unchanged") and an equal
profile read from the online store.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import numpy as np


class SignalCache:
    def __init__(self, max_users: int) -> None:
        self.max_users = max_users
        # user -> (history it was made from, LM profile, its signal rows)
        self._kept: OrderedDict[int, tuple] = OrderedDict()
        self.hits = 0

    def rows(self, users: list[int], histories: list[object | None], profiles: np.ndarray, n_items: int,
             compute: Callable[[list[int], np.ndarray], list[np.ndarray]]) -> list[np.ndarray]:
        """The four ``(len(users), n_items)`` signal arrays of ``users``; ``histories[r]`` is
        the in-memory history user ``r``'s rows are made from (None: keep nothing for them),
        and ``compute(users, profiles)`` makes the rows of users not kept."""
        out = [np.empty((len(users), n_items), dtype=np.float32) for _ in range(4)]
        misses = []
        for r, (user, events) in enumerate(zip(users, histories)):
            kept = self._kept.get(user)
            if kept is not None and events is not None and kept[0] is events and np.array_equal(kept[1], profiles[r]):
                self._kept.move_to_end(user)
                for rows, row in zip(out, kept[2]):
                    rows[r] = row
            else:
                misses.append(r)
        self.hits += len(users) - len(misses)
        if not misses:
            return out
        for rows, computed in zip(out, compute([users[r] for r in misses], profiles[misses])):
            rows[misses] = computed
        for r in misses:
            if self.max_users and histories[r] is not None:
                self._kept[users[r]] = (histories[r], profiles[r].copy(), [rows[r].copy() for rows in out])
                self._kept.move_to_end(users[r])
        while len(self._kept) > self.max_users:
            self._kept.popitem(last=False)
        return out
