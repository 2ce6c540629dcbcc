"""What each protocol fits on, whom it evaluates and which items it hides (BENCHMARK.md).

P1 and P2 tune on validation with models fit on train, then refit on train + validation for
test. P0 follows RecBole: fit on train only, and at test time hide train AND validation items.
Where a data set repeats (``data.repeats``: a shop's rebuys), nothing is hidden and an item
bought again is a hit like any other.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from models.interactions import Interactions


@dataclass(frozen=True)
class Task:
    """One evaluation: fit on ``fit``, rank for users with ground truth in ``truth``."""

    protocol: str
    phase: str  # "valid" or "test"
    fit: pd.DataFrame
    truth: pd.DataFrame
    hidden: pd.DataFrame  # events whose items are excluded from the user's ranking
    repeats: bool = False  # True: ``hidden`` is ignored; a user's own past items may be ranked and hit


def load_parts(split_dir: Path, protocol: str) -> dict[str, pd.DataFrame]:
    folder = Path(split_dir) / protocol
    return {part: pd.read_parquet(folder / f"{part}.parquet") for part in ("train", "valid", "test")}


def tasks(protocol: str, parts: dict[str, pd.DataFrame], repeats: bool = False) -> dict[str, Task]:
    train, valid, test = parts["train"], parts["valid"], parts["test"]
    seen = pd.concat([train, valid], ignore_index=True)
    test_fit = train if protocol == "P0" else seen
    return {
        "valid": Task(protocol, "valid", train, valid, train, repeats),
        "test": Task(protocol, "test", test_fit, test, seen, repeats),
    }


@dataclass(frozen=True)
class Target:
    """A task encoded for ranking: evaluated user rows, their truth and hidden items."""

    data: Interactions
    rows: np.ndarray  # evaluated users' rows in data
    truth: sp.csr_matrix  # len(rows) x n_items, binary
    hidden: sp.csr_matrix  # len(rows) x n_items, binary (empty where the data set repeats)
    repeats: bool = False  # what the task said: models may rank the user's own past items

    def sample(self, n: int | None, seed: int) -> Target:
        """At most ``n`` of the evaluated users (a seeded uniform sample, in row order); all
        of them with ``None`` or fewer than ``n``."""
        if n is None or len(self.rows) <= n:
            return self
        pick = np.sort(np.random.default_rng(seed).choice(len(self.rows), n, replace=False))
        return Target(self.data, self.rows[pick], self.truth[pick], self.hidden[pick], self.repeats)


def _pairs_matrix(data: Interactions, events: pd.DataFrame, rows: np.ndarray) -> sp.csr_matrix:
    """Binary (len(rows) x n_items) matrix of the events' (user, item) pairs, for ``rows``."""
    user_rows = data.rows_of(events["user_id"].to_numpy())
    cols = data.columns_of(events["item_id"].to_numpy())
    keep = (user_rows >= 0) & (cols >= 0)
    position = np.full(data.n_users, -1, dtype=np.int64)
    position[rows] = np.arange(len(rows))
    where = position[user_rows[keep]]
    mask = where >= 0
    matrix = sp.csr_matrix(
        (np.ones(mask.sum(), dtype=np.float32), (where[mask], cols[keep][mask])),
        shape=(len(rows), data.n_items),
    )
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


def encode(task: Task) -> Target:
    """Evaluated users: known in the fitting data, with at least one ground-truth item that
    the fitting data knows and (unless the task repeats) the user has not already seen.
    Items outside the fitting data cannot be ranked by any model here and are left out of
    the ground truth."""
    data = Interactions.from_events(task.fit)
    all_rows = np.arange(data.n_users)
    truth = _pairs_matrix(data, task.truth, all_rows)
    hidden = _pairs_matrix(data, task.hidden.iloc[:0] if task.repeats else task.hidden, all_rows)
    truth = truth - truth.multiply(hidden)
    truth.eliminate_zeros()
    rows = np.flatnonzero(np.diff(truth.indptr) > 0)
    return Target(data, rows, truth[rows], hidden[rows], task.repeats)
