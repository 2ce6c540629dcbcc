"""Encoded targets: a sample of the evaluated users keeps each user's own truth."""
from __future__ import annotations

import numpy as np
import pandas as pd

from models.protocols import Task, encode


def test_a_target_sample_keeps_each_sampled_users_truth_and_is_seeded():
    rng = np.random.default_rng(0)
    events = pd.DataFrame({"user_id": rng.integers(0, 300, 5000), "item_id": rng.integers(0, 80, 5000),
                           "timestamp": pd.to_datetime(rng.uniform(1.6e9, 1.7e9, 5000), unit="s", utc=True),
                           "event_type": "rating", "value": 1.0})
    fit, truth = events.iloc[:4000], events.iloc[4000:]
    target = encode(Task("P1", "test", fit, truth, fit))
    assert target.sample(None, 0) is target and target.sample(len(target.rows), 0) is target
    part = target.sample(50, 7)
    assert len(part.rows) == 50 and np.all(np.diff(part.rows) > 0) and set(part.rows) <= set(target.rows)
    where = np.searchsorted(target.rows, part.rows)
    assert (part.truth != target.truth[where]).nnz == 0 and (part.hidden != target.hidden[where]).nnz == 0
    assert np.array_equal(target.sample(50, 7).rows, part.rows) and not np.array_equal(target.sample(50, 8).rows, part.rows)
