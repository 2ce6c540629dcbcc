"""Why an item is recommended, in a short sentence: the user's own item again, the seen item
that led to it (by item-CF similarity or by text), or the source itself."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from models.baselines import DecayedItemKNN

REASONS = {
    "cf": "because of {item}",
    "ease": "people with your history chose it too",
    "lm": "its description is close to {item}",
    "pop": "popular right now",
    "again": "you have had it {times} before",
}


@dataclass
class Reasons:
    """The catalogue's links, from which a reason names the item that led to another."""

    similar_to: sp.csc_matrix  # column j: the items that lead to j, rows ascending in each column
    unit_vectors: np.ndarray  # (n_items, dim)
    item_keys: list  # item column -> the id as the source has it
    titles: dict  # id -> title

    @classmethod
    def of(cls, knn: DecayedItemKNN, unit_vectors: np.ndarray, item_keys: list, titles: dict) -> Reasons:
        similar_to = knn.similarity_.tocsc()
        similar_to.sort_indices()  # searchable (``cf_links``)
        return cls(similar_to, unit_vectors, item_keys, titles)

    def one(self, source: str, seen: np.ndarray, column: int, times: np.ndarray | None = None) -> str:
        """The reason for ``column``, proposed by ``source``, to a user who has ``seen`` these
        sorted item columns (``times``: their events with each)."""
        return self.many([source], seen, np.array([column], np.int64), times)[0]

    def many(self, sources: list[str], seen: np.ndarray, columns: np.ndarray, times: np.ndarray | None = None) -> list[str]:
        """``one`` for each of ``columns`` for one user, their CF links and text cosines each
        in one pass (a call per item was a tenth of a request)."""
        at = np.minimum(np.searchsorted(seen, columns), max(len(seen) - 1, 0))
        again = (seen[at] == columns) if len(seen) else np.zeros(len(columns), bool)
        strongest = np.zeros(len(columns), np.int64)  # the seen item that led to each, by its source
        for source, links in (("cf", self.cf_links), ("lm", self.text_links)):
            mine = np.flatnonzero(~again & (np.asarray(sources, dtype=object) == source))
            if len(mine) and len(seen):
                strongest[mine] = np.argmax(links(seen, columns[mine]), axis=1)
        out = []
        for j, (source, column) in enumerate(zip(sources, columns)):
            if again[j]:
                count = 1 if times is None else int(times[at[j]])
                out.append(REASONS["again"].format(times="once" if count == 1 else f"{count} times"))
            elif source in ("cf", "lm"):
                best = self.item_keys[seen[strongest[j]]]
                out.append(REASONS[source].format(item=self.titles.get(best, str(best))))
            else:
                out.append(REASONS[source])
        return out

    def text_links(self, seen: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """``(len(columns), len(seen))`` LM cosines."""
        return self.unit_vectors[columns] @ self.unit_vectors[seen].T

    def cf_links(self, seen: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """``(len(columns), len(seen))`` item-CF similarity of each seen item to each column:
        the columns' stored rows as one sorted list of (column's place, row) keys, searched once."""
        sim, n = self.similar_to, len(self.item_keys)
        starts, ends = sim.indptr[columns], sim.indptr[columns + 1]
        lengths = ends - starts
        place = np.repeat(np.arange(len(columns)), lengths)
        stored = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
        keys = place * n + sim.indices[stored]
        if not len(keys):
            return np.zeros((len(columns), len(seen)))
        wanted = np.arange(len(columns))[:, None] * n + seen[None, :]
        pos = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
        return np.where(keys[pos] == wanted, sim.data[stored][pos], 0.0)
