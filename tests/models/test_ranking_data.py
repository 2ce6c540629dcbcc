from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from models.ranking_data import clock, ranks_of

# Few distinct values, signed zeros and infinities: ties everywhere, as in real rows.
VALUES = st.sampled_from([0.0, -0.0, 1.0, 0.5, -0.5, 1e-30, -1e-30, 3.4e38, -3.4e38, np.inf, -np.inf, 0.25])


def stable_ranks(scores: np.ndarray) -> np.ndarray:
    """The definition: place in a stable sort by descending score."""
    ranks = np.empty(scores.shape, dtype=np.float32)
    ranks[np.arange(len(scores))[:, None], np.argsort(-scores, axis=1, kind="stable")] = np.arange(scores.shape[1])
    return ranks


@settings(max_examples=200, deadline=None)
@given(scores=arrays(np.float32, st.tuples(st.integers(1, 4), st.integers(1, 40)), elements=VALUES), data=st.data())
def test_ranks_of_is_the_stable_sort_rank(scores, data) -> None:
    columns = data.draw(arrays(np.int64, (scores.shape[0], data.draw(st.integers(1, 10))), elements=st.integers(0, scores.shape[1] - 1)))
    assert np.array_equal(ranks_of(scores, columns), np.take_along_axis(stable_ranks(scores), columns, axis=1))


def test_ranks_of_random_rows_of_catalogue_width() -> None:
    rng = np.random.default_rng(3)
    scores = rng.random((8, 3000)).astype(np.float32)
    scores[:, rng.random(3000) < 0.4] = 0.0  # item-CF rows are mostly zeros
    columns = rng.integers(0, 3000, (8, 300))
    assert np.array_equal(ranks_of(scores, columns), np.take_along_axis(stable_ranks(scores), columns, axis=1))


def test_ranks_of_refuses_other_float_widths() -> None:
    # float64 scores would be ranked in float32 and merge values that differ.
    with pytest.raises(TypeError, match="float32"):
        ranks_of(np.zeros((1, 3)), np.zeros((1, 1), dtype=np.int64))


@settings(max_examples=300, deadline=None)
@given(seconds=arrays(np.float64, st.integers(1, 20), elements=st.one_of(
    st.integers(-10**9, 4 * 10**9).map(float),  # whole seconds, as most event logs have
    st.integers(-10**15, 4 * 10**15).map(lambda us: us / 1e6),  # microseconds, as Interactions holds them
)))
def test_clock_matches_pandas_calendar_fields(seconds) -> None:
    stamp = pd.to_datetime(seconds, unit="s", utc=True)
    hour, weekday = clock(seconds)
    assert np.array_equal(hour, stamp.hour.to_numpy() + stamp.minute.to_numpy() / 60)
    assert np.array_equal(weekday, stamp.weekday.to_numpy())
