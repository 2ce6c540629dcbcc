"""Tests of features.live's fold: live updates of decayed state equal the batch recompute."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from features.decay import SECONDS_PER_DAY, decayed_sums, exponential
from features.live import _fold

T0 = 1_000_000_000.0  # epoch seconds of day 0
DAY = SECONDS_PER_DAY
KEYS = 7


@st.composite
def _event_batches(draw):
    """Events (keys, seconds, weights) in a random order, cut into random batches."""
    n = draw(st.integers(1, 60))
    keys = draw(st.lists(st.integers(0, KEYS - 1), min_size=n, max_size=n))
    days = draw(st.lists(st.floats(0.0, 1000.0, allow_nan=False), min_size=n, max_size=n))
    weights = draw(st.lists(st.floats(0.01, 100.0, allow_nan=False), min_size=n, max_size=n))
    order = draw(st.permutations(range(n)))
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=6)))
    return (
        np.array(keys, dtype=np.int64)[order],
        T0 + np.array(days)[order] * DAY,
        np.array(weights)[order],
        [0, *cuts, n],
    )


def _folded(keys, seconds, weights, cuts, half_life):
    """State and time per key after folding the batches one by one, from no state."""
    state, at = np.zeros((KEYS, 1)), np.full(KEYS, np.nan)
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        state, at = _fold(state, at, keys[lo:hi], seconds[lo:hi], weights[lo:hi, None], half_life)
        at = np.where(np.isinf(at), np.nan, at)  # a key no batch has touched yet: still no state
    return state[:, 0], at


@settings(max_examples=300, deadline=None)
@given(batches=_event_batches(), half_life=st.floats(0.05, 2000.0), after_days=st.floats(0.0, 500.0, allow_nan=False))
def test_any_sequence_of_live_folds_equals_the_batch(batches, half_life, after_days) -> None:
    keys, seconds, weights, cuts = batches
    state, at = _folded(keys, seconds, weights, cuts, half_life)
    unique = np.unique(keys)
    # Stored: each key's score as of its own latest event, the batch's relative scores.
    _, relative = decayed_sums(keys, seconds, weights, None, half_life)
    np.testing.assert_allclose(state[unique], relative, rtol=1e-9, atol=1e-300)
    np.testing.assert_array_equal(at[unique], [seconds[keys == k].max() for k in unique])
    # Read at any time at or after every event (decayed from last_event_s): the batch sum.
    when = seconds.max() + after_days * DAY
    _, batch = decayed_sums(keys, seconds, weights, when, half_life)
    read = state[unique] * exponential((when - at[unique]) / DAY, half_life)
    np.testing.assert_allclose(read, batch, rtol=1e-9, atol=1e-300)


def test_long_spans_stay_finite_at_a_one_day_half_life() -> None:
    # 22 years of events at a one-day half-life: 2 ** -8035 is below float64's range.
    span = 22 * 365.25
    seconds = T0 + DAY * np.array([0.0, span - 1 / 24, span])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        # Newest first, one per batch: every later one is a late event.
        state, at = _folded(np.ones(3, np.int64), seconds[::-1], np.ones(3), [0, 1, 2, 3], 1.0)
        _, relative = decayed_sums(np.ones(3), seconds, None, None, 1.0)
        np.testing.assert_allclose(state[1], 1.0 + 2 ** (-1 / 24), rtol=1e-12)
        np.testing.assert_allclose(relative, [state[1]], rtol=1e-12)
        # Read 22 years later still: an honest 0, not NaN or inf.
        late = state[1] * exponential(span, 1.0)
        _, batch = decayed_sums(np.ones(3), seconds, None, seconds[-1] + span * DAY, 1.0)
    assert late == 0.0 and batch.tolist() == [0.0]
