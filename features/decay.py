"""Interest decay: how much an event of weight w at time t_j counts at query time t.

``w * d(t - t_j)`` with (DESIGN.md, "Interest decay"):

- exponential: ``d(age) = 2 ** (-age / half_life)`` (= ``exp(-k age)``, ``k = ln 2 / h``);
- linear: ``d(age) = max(0, 1 - k age)``, the textbook ``I0 - k t`` clamped at zero;
- time windows: a weight per age bucket, normalised to sum to one (a weighted mean);
- learned: a half-life per user, fitted on the fitting period (``features.learned_decay``).

Ages are in days and never negative: an event after the query time weighs as if it were
now (weight 1), as Microsoft SAR clips future events, so a reference time that lags the
data can never inflate a score above its undecayed value.

Scores relative to each key's own latest event (``decayed_sums(..., at_seconds=None)``)
stay in range however old the key is: no exponent is ever positive, so 22 years at a
one-day half-life underflows to an honest 0, it never overflows. The online store keeps
those, and decays them on read.

Everything is vectorised numpy over arrays of events; nothing loops over events in Python.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

SECONDS_PER_DAY = 86_400.0

DecayKind = Literal["exponential", "linear", "window", "none"]
ValueMode = Literal["one", "value", "centered"]


# ---------------------------------------------------------------- decay functions


def _ages(age_days: np.ndarray | float) -> np.ndarray:
    """Ages as float64 with negative ages (events after the query time) clipped to 0."""
    return np.maximum(np.asarray(age_days, dtype=np.float64), 0.0)


def exponential(age_days: np.ndarray | float, half_life_days: np.ndarray | float) -> np.ndarray:
    """Exponential decay by half-life: ``2 ** (-age / half_life)``.

    Args:
        age_days: Ages in days (any shape); negative ages weigh 1.
        half_life_days: A positive scalar, or an array broadcastable to ``age_days`` (e.g. a
            learned half-life per event's user). ``np.inf`` means no decay.

    Returns:
        float64 weights in (0, 1] (0 only where the true value underflows float64).

    Raises:
        ValueError: if any half-life is not positive (or is NaN).
    """
    half_life = np.asarray(half_life_days, dtype=np.float64)
    # `not (h > 0)` also catches NaN, which would silently poison every weight.
    if np.any(~(half_life > 0)):
        raise ValueError(f"half_life_days must be positive, got {half_life_days!r}")
    # exp2 of a non-positive number: never overflows, underflows to 0 only when it must.
    return np.exp2(-_ages(age_days) / half_life)


def linear(age_days: np.ndarray | float, rate_per_day: float) -> np.ndarray:
    """Linear decay ``max(0, 1 - k * age)``: full weight now, nothing after ``1 / k`` days.

    Args:
        age_days: Ages in days; negative ages weigh 1.
        rate_per_day: ``k``, the share of the weight lost per day (0 means no decay).

    Returns:
        float64 weights in [0, 1].

    Raises:
        ValueError: if the rate is negative.
    """
    if not rate_per_day >= 0:
        raise ValueError(f"rate_per_day must be >= 0, got {rate_per_day!r}")
    return np.maximum(0.0, 1.0 - rate_per_day * _ages(age_days))


def time_windows(
    age_days: np.ndarray | float, bounds_days: np.ndarray | list[float], weights: np.ndarray | list[float]
) -> np.ndarray:
    """Time-weighted windows: the weight of the age bucket an event falls in, normalised.

    Bucket ``j`` holds ages in ``[bounds[j-1], bounds[j])`` with ``bounds[-1] = 0``; events
    at least ``bounds[-1]`` days old weigh 0. The weights are divided by their sum, so that
    summing weighted events gives the textbook weighted mean of the per-bucket totals
    (``sum_j w_j x_j / sum_j w_j``).

    Args:
        age_days: Ages in days; negative ages fall in the first bucket.
        bounds_days: Strictly increasing positive right edges of the buckets.
        weights: One non-negative weight per bucket, not all zero.

    Returns:
        float64 weights, each one of ``weights / sum(weights)`` or 0.

    Raises:
        ValueError: on malformed bounds or weights.
    """
    bounds = np.asarray(bounds_days, dtype=np.float64).reshape(-1)
    weights = np.asarray(weights, dtype=np.float64).reshape(-1)
    if len(bounds) == 0 or len(bounds) != len(weights):
        raise ValueError(f"need one weight per bucket: {len(bounds)} bounds, {len(weights)} weights")
    if bounds[0] <= 0 or np.any(np.diff(bounds) <= 0):
        raise ValueError(f"bounds_days must be positive and strictly increasing, got {bounds.tolist()}")
    if np.any(weights < 0) or weights.sum() <= 0:
        raise ValueError(f"weights must be non-negative and not all zero, got {weights.tolist()}")
    # One extra bucket past the last bound, weighing 0: old events drop out of the mean.
    table = np.append(weights / weights.sum(), 0.0)
    return table[np.searchsorted(bounds, _ages(age_days), side="right")]


def decay_weights(kind: DecayKind, age_days: np.ndarray | float, **params: Any) -> np.ndarray:
    """Dispatch by name, as ``params.yaml`` names a decay.

    Args:
        kind: ``exponential`` (``half_life_days``), ``linear`` (``rate_per_day``),
            ``window`` (``bounds_days``, ``weights``) or ``none`` (every weight 1).
        age_days: Ages in days.
        **params: The chosen kind's parameters.

    Returns:
        float64 weights with the shape of ``age_days``.

    Raises:
        ValueError: on an unknown kind; TypeError on missing or unexpected parameters.
    """
    if kind == "exponential":
        return exponential(age_days, **params)
    if kind == "linear":
        return linear(age_days, **params)
    if kind == "window":
        return time_windows(age_days, **params)
    if kind == "none":
        if params:
            raise TypeError(f"decay 'none' takes no parameters, got {sorted(params)}")
        return np.ones(np.shape(age_days), dtype=np.float64)
    raise ValueError(f"unknown decay kind {kind!r}; known: exponential, linear, window, none")


def event_weights(
    event_type: np.ndarray,
    value: np.ndarray,
    type_weights: Mapping[str, float],
    value_mode: ValueMode = "one",
    *,
    center: float | None = None,
    default: float | None = None,
) -> np.ndarray:
    """Configurable weight of each event, before decay: ``type_weight * f(value)``.

    Args:
        event_type: Per event, its type (e.g. ``rating``, ``click``, ``purchase``).
        value: Per event, its value (e.g. the rating).
        type_weights: Weight per event type.
        value_mode: ``one`` (the value is ignored: implicit feedback), ``value`` (times the
            value) or ``centered`` (times ``value - center``: ratings below the centre count
            against the item, a dislike is negative interest).
        center: Centre for ``centered``; the mean of ``value`` when None.
        default: Weight of types missing from ``type_weights``; None makes them an error, so
            that a misspelt type in params.yaml fails loudly instead of weighing nothing.

    Returns:
        float64 weights, one per event.

    Raises:
        ValueError: on an unknown type (without ``default``) or value mode.
    """
    types = np.asarray(event_type).astype(str)
    values = np.asarray(value, dtype=np.float64)
    # Map the few distinct types, not the millions of events.
    names, inverse = np.unique(types, return_inverse=True)
    missing = [str(n) for n in names if n not in type_weights]
    if missing and default is None:
        raise ValueError(f"no weight for event type(s) {missing}; configured: {sorted(type_weights)}")
    table = np.array([type_weights.get(str(n), default) for n in names], dtype=np.float64)
    base = table[inverse.reshape(-1)] if len(types) else np.empty(0)
    if value_mode == "one":
        return base
    if value_mode == "value":
        return base * values
    if value_mode == "centered":
        middle = float(values.mean()) if center is None and len(values) else (center or 0.0)
        return base * (values - middle)
    raise ValueError(f"unknown value_mode {value_mode!r}; known: one, value, centered")


# ---------------------------------------------------------------- batch sums


def decayed_sums(
    keys: np.ndarray,
    seconds: np.ndarray,
    weights: np.ndarray | None,
    at_seconds: float | None,
    half_life_days: np.ndarray | float,
) -> tuple[np.ndarray, np.ndarray]:
    """Per key, ``sum_j w_j * 2 ** (-max(at - t_j, 0) / h)``: the batch decayed score.

    Args:
        keys: Per event, its group (a user, an item, a user x category code, ...).
        seconds: Per event, epoch seconds.
        weights: Per event weight; 1 each when None.
        at_seconds: Query time in epoch seconds; events after it weigh their full weight.
            None measures each key from its own latest event (relative scores, which
            stay in range however old the key is).
        half_life_days: Scalar, or per event (e.g. the learned half-life of its user).

    Returns:
        The sorted distinct keys and their float64 scores.
    """
    keys = np.asarray(keys).reshape(-1)
    seconds = np.asarray(seconds, dtype=np.float64).reshape(-1)
    unique, inverse = np.unique(keys, return_inverse=True)
    inverse = inverse.reshape(-1)
    at: np.ndarray | float
    if at_seconds is None:
        reference = np.full(len(unique), -np.inf)
        np.maximum.at(reference, inverse, seconds)
        at = reference[inverse]
    else:
        at = float(at_seconds)
    half_life = np.asarray(half_life_days, dtype=np.float64)
    decayed = exponential((at - seconds) / SECONDS_PER_DAY, half_life)
    if weights is not None:
        decayed = decayed * np.asarray(weights, dtype=np.float64).reshape(-1)
    return unique, np.bincount(inverse, weights=decayed, minlength=len(unique))
