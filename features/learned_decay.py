"""Learned decay: a half-life per user, fitted on the fitting period.

The kernels themselves live in ``features.decay``; this module chooses their half-lives.
A user's half-life is the one under which their recent items best predict their held-out
next events (``fit_user_half_lives``), with a log-normal prior that keeps users with few
targets near the pooled optimum.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp

from features.decay import SECONDS_PER_DAY, exponential


@dataclass(frozen=True)
class LearnedDecay:
    """How per-user half-lives are fitted (``fit_user_half_lives``).

    Attributes:
        grid_days: Candidate half-lives, increasing; the optimum is refined between grid
            points by a parabola in ``log2(h)``, then clipped to the grid's range.
        holdout: Share of the fitting events held out as prediction targets (0.25: P1's
            validation is a quarter of its training's size, so the inner task mirrors the
            outer one).
        holdout_by: ``time``: the globally latest events (an inner P1: the horizon is the
            data's own); ``user``: each user's latest events (every user gets targets,
            but the horizon shrinks to a user's next session).
        max_targets: At most this many targets per user, evenly spread over the user's
            held-out events, to bound the work for very active users.
        floor: Weight of the popularity fallback in the next-event distribution: a target
            no recent item points to costs ``log(floor * share)``, not minus infinity.
        prior_strength: ``lambda`` of the log-normal prior: the penalty is
            ``lambda * (log2(h / h0))**2`` nats, h0 the pooled optimum. Users with few targets
            stay near h0; one with many can move far from it. ``inf``: every user gets h0
            (one learned global half-life).
        global_half_life_days: h0; None fits it on all users pooled.
    """

    grid_days: tuple[float, ...] = tuple(float(2.0**e) for e in range(-3, 13))  # 3 h .. 11 y
    holdout: float = 0.25
    holdout_by: Literal["time", "user"] = "time"
    max_targets: int = 20
    floor: float = 0.05
    prior_strength: float = 0.5
    global_half_life_days: float | None = None


@dataclass(frozen=True)
class UserHalfLives:
    """Fitted half-lives.

    Attributes:
        keys: Sorted user keys that were fitted (every user of the fitting data).
        half_life_days: Per key, its half-life in days.
        global_half_life_days: The pooled optimum (or the given one): the prior's centre and
            the half-life of users the fit has never seen.
        targets: Per key, how many held-out events informed it (0: it got the global value).
        grid_days: The grid searched.
        log_likelihood: Per grid point, the pooled log-likelihood (its argmax is the global).
    """

    keys: np.ndarray
    half_life_days: np.ndarray
    global_half_life_days: float
    targets: np.ndarray
    grid_days: np.ndarray
    log_likelihood: np.ndarray

    def of(self, keys: np.ndarray) -> np.ndarray:
        """Half-life of each key; the global half-life for keys not fitted."""
        found = _lookup(self.keys, np.asarray(keys).reshape(-1))
        return np.where(found >= 0, self.half_life_days[np.maximum(found, 0)], self.global_half_life_days)


def fit_user_half_lives(
    users: np.ndarray,
    items: np.ndarray,
    seconds: np.ndarray,
    transition: np.ndarray | sp.spmatrix,
    *,
    weights: np.ndarray | None = None,
    config: LearnedDecay = LearnedDecay(),
) -> UserHalfLives:
    """Fit one exponential half-life per user on the fitting period only.

    Objective. The last ``config.holdout`` share of the fitting events (``holdout_mask``) are
    the targets, the rest the history: an inner temporal split, as P1 splits the data. For
    user ``u`` with history events ``i`` (item ``x_i``, weight ``w_i``, age ``a_i`` days
    before u's latest history event) and a half-life ``h``, the decayed profile is
    ``p_i = w_i 2 ** (-a_i / h)``; with ``T`` the ``transition`` matrix (row ``x``: how the
    model scores every item from interest in ``x``, e.g. an item-CF similarity or a shared
    category matrix), u's next-event distribution over items is

        P_h(y) = (1 - floor) * (p @ T)[y] / sum_y' (p @ T)[y'] + floor * pi[y]

    (the model's own decayed score, normalised over items; ``pi`` is each item's share of
    history events). Each user's half-life maximises

        sum over u's targets y of log P_h(y)  -  prior_strength * log2(h / h0) ** 2

    over ``config.grid_days`` (refined by a parabola in log2 h). h0 is the pooled maximum
    (all users' log-likelihoods summed) unless given. Users without history or targets
    get h0, as do users whose likelihood does not depend on h (every history event at one
    instant); when the pooled likelihood is flat too, h0 is the grid's geometric middle.
    Normalising by the profile's own mass makes the objective blind to the
    reference time, as the model's ranking is.

    Per user and category: pass composite keys (e.g. ``user * n_categories + category``)
    over events exploded by category; each key's history then predicts its own targets.

    Cost: one pass per grid point over (history event, target) pairs with ``T > 0``, at
    most ``max_targets`` per user; ml-1m's 600k training events take a few seconds.

    Args:
        users: Per event, the user key (e.g. the user's row).
        items: Per event, the item's index: a row of ``transition``.
        seconds: Per event, epoch seconds.
        transition: ``(n_items, n_items)`` non-negative matrix, dense or sparse.
        weights: Per event non-negative weight; 1 each when None.
        config: Grid, holdout, prior and fallback settings.

    Returns:
        The fitted ``UserHalfLives``.
    """
    users = np.asarray(users).reshape(-1)
    items = np.asarray(items, dtype=np.int64).reshape(-1)
    seconds = np.asarray(seconds, dtype=np.float64).reshape(-1)
    weights = np.ones(len(users)) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    grid = np.asarray(config.grid_days, dtype=np.float64)
    if len(grid) < 1 or np.any(grid <= 0) or np.any(np.diff(grid) <= 0):
        raise ValueError("grid_days must be positive and increasing")
    if not config.prior_strength >= 0:
        raise ValueError(f"prior_strength must be >= 0, got {config.prior_strength}")
    if not 0.0 < config.floor < 1.0:
        raise ValueError(f"floor must lie in (0, 1), got {config.floor}")
    if np.any(weights < 0):
        raise ValueError("weights must be non-negative: a profile is a mixture of interests")
    n_items = transition.shape[0]
    if len(items) and (items.min() < 0 or items.max() >= n_items):
        raise ValueError(f"items must index the transition's {n_items} rows")
    keys, user = np.unique(users, return_inverse=True)
    user = user.reshape(-1)
    n_users = len(keys)

    is_target = holdout_mask(user, seconds, config.holdout, config.holdout_by)
    history = np.flatnonzero(~is_target)
    history = history[np.lexsort((seconds[history], user[history]))]
    targets = _spread_targets(np.flatnonzero(is_target), user, seconds, config.max_targets)

    h_user, h_item = user[history], items[history]
    share = np.bincount(h_item, minlength=n_items) / max(len(history), 1)
    lookup = _Entries(transition)
    row_mass = lookup.row_sums
    latest = np.full(n_users, -np.inf)
    np.maximum.at(latest, h_user, seconds[history])
    age = (latest[h_user] - seconds[history]) / SECONDS_PER_DAY

    pair_hist, pair_target, pair_value = _pairs(h_user, h_item, targets, user, items, lookup)
    t_user = user[targets]
    n_targets = np.bincount(t_user, minlength=n_users)
    has_history = np.bincount(h_user, minlength=n_users) > 0
    informative = has_history[t_user]  # targets of users with no history teach nothing

    curves = np.zeros((len(grid), n_users))
    for g, half_life in enumerate(grid):
        profile = weights[history] * exponential(age, half_life)
        mass = np.bincount(h_user, weights=profile * row_mass[h_item], minlength=n_users)
        score = np.bincount(pair_target, weights=profile[pair_hist] * pair_value, minlength=len(targets))
        with np.errstate(invalid="ignore", divide="ignore"):
            model = np.where(mass[t_user] > 0, score / mass[t_user], 0.0)
        # Items never seen in the history still get a sliver of the fallback (one event's).
        fallback = np.maximum(share[items[targets]], 1.0 / max(len(history), 1))
        probability = (1.0 - config.floor) * model + config.floor * fallback
        log_p = np.where(informative, np.log(probability), 0.0)
        curves[g] = np.bincount(t_user, weights=log_p, minlength=n_users)

    pooled = curves.sum(axis=1)
    log_grid = np.log2(grid)
    if config.global_half_life_days is not None:
        center = float(np.log2(config.global_half_life_days))
    elif _flat(pooled[:, None])[0]:
        # No evidence either way (no usable targets, or every event at one instant):
        # the grid's geometric middle rather than an arbitrary end of it.
        center = float((log_grid[0] + log_grid[-1]) / 2)
    else:
        center = float(_refine(pooled[:, None], log_grid)[0])
    if np.isinf(config.prior_strength):
        fitted = np.full(n_users, 2.0**center)  # an infinitely sure prior: the pooled fit only
    else:
        penalised = curves - config.prior_strength * (log_grid[:, None] - center) ** 2
        fitted = 2.0 ** _refine(penalised, log_grid)
    fitted_targets = np.where(has_history, n_targets, 0)
    # A user whose likelihood does not depend on h (e.g. one session) has nothing to say.
    fitted = np.where((fitted_targets > 0) & ~_flat(curves), fitted, 2.0**center)
    return UserHalfLives(keys, fitted, float(2.0**center), fitted_targets, grid, pooled)


def holdout_mask(
    users: np.ndarray, seconds: np.ndarray, holdout: float, by: Literal["time", "user"] = "time"
) -> np.ndarray:
    """Which events are the inner targets of ``fit_user_half_lives``.

    Models that fit their transition matrix must fit it on the other events only, or the
    targets leak into the similarity they are predicted with.

    Args:
        users: Per event, its user key.
        seconds: Per event, epoch seconds.
        holdout: Share of events held out, in (0, 1).
        by: ``time``: the globally latest ``holdout`` share (ties in input order, as the P1
            split); ``user``: each user's latest ``floor(holdout * n_u)`` events.

    Returns:
        Boolean mask, True for target events.
    """
    if not 0.0 < holdout < 1.0:
        raise ValueError(f"holdout must lie in (0, 1), got {holdout}")
    seconds = np.asarray(seconds, dtype=np.float64).reshape(-1)
    order = np.argsort(seconds, kind="stable")
    mask = np.zeros(len(seconds), dtype=bool)
    if by == "time":
        mask[order[int(round(len(order) * (1.0 - holdout))) :]] = True
        return mask
    if by != "user":
        raise ValueError(f"unknown holdout_by {by!r}; known: time, user")
    _, user = np.unique(np.asarray(users).reshape(-1), return_inverse=True)
    user = user.reshape(-1)
    # Events grouped by user, each group in time order.
    ranked = order[np.argsort(user[order], kind="stable")]
    counts = np.bincount(user)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    rank = np.arange(len(ranked)) - np.repeat(starts, counts)
    held = np.floor(counts * holdout).astype(np.int64)
    mask[ranked[rank >= (counts - held)[user[ranked]]]] = True
    return mask


def category_transition(item_categories: sp.spmatrix | np.ndarray) -> sp.csr_matrix:
    """Item x item transition through shared categories, for ``fit_user_half_lives``.

    Interest in an item spreads evenly over its categories, and each category's share
    evenly over the category's items: ``T = rownorm(M) @ rownorm(M.T)``, each non-empty row
    summing to 1.

    Args:
        item_categories: ``(n_items, n_categories)`` membership (non-zero = member).

    Returns:
        float64 CSR ``(n_items, n_items)``.
    """
    member = sp.csr_matrix(item_categories, dtype=np.float64)
    member.data[:] = 1.0
    return (_row_normalised(member) @ _row_normalised(member.T.tocsr())).tocsr()


def _row_normalised(matrix: sp.csr_matrix) -> sp.csr_matrix:
    sums = np.asarray(matrix.sum(axis=1)).ravel()
    scale = np.divide(1.0, sums, out=np.zeros_like(sums), where=sums > 0)
    return sp.diags(scale) @ matrix


def _spread_targets(candidates: np.ndarray, user: np.ndarray, seconds: np.ndarray, limit: int) -> np.ndarray:
    """At most ``limit`` targets per user, evenly spaced over the user's time-ordered ones."""
    candidates = candidates[np.lexsort((seconds[candidates], user[candidates]))]
    owner = user[candidates]
    starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]]) if len(owner) else np.empty(0, np.int64)
    counts = np.diff(np.r_[starts, len(owner)])
    rank = np.arange(len(owner)) - np.repeat(starts, counts)
    total = np.repeat(counts, counts)
    # Keep rank r when it is the first to reach a new multiple of total / limit.
    keep = (total <= limit) | (np.floor(rank * limit / total) != np.floor((rank - 1) * limit / total))
    return candidates[keep]


def _pairs(
    h_user: np.ndarray,
    h_item: np.ndarray,
    targets: np.ndarray,
    user: np.ndarray,
    items: np.ndarray,
    lookup: "_Entries",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (history event, target) pair of one user whose transition value is non-zero.

    Returns:
        Per pair: the history event's position (in user, time order), the target's position in
        ``targets`` and ``transition[history item, target item]``.
    """
    n_users = int(user.max()) + 1 if len(user) else 0
    start = np.searchsorted(h_user, np.arange(n_users))
    count = np.bincount(h_user, minlength=n_users)
    hist_parts, target_parts, value_parts = [], [], []
    # Chunks bound the pair arrays to a few million entries at a time.
    per_target = count[user[targets]]
    bounds = np.searchsorted(np.cumsum(per_target), np.arange(0, per_target.sum() + 4_000_000, 4_000_000))
    bounds = np.unique(np.r_[0, bounds, len(targets)])
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        chunk = np.arange(lo, hi)
        repeat = per_target[chunk]
        target_pos = np.repeat(chunk, repeat)
        offset = np.arange(repeat.sum()) - np.repeat(np.cumsum(repeat) - repeat, repeat)
        hist_pos = np.repeat(start[user[targets[chunk]]], repeat) + offset
        value = lookup(h_item[hist_pos], items[targets[target_pos]])
        keep = value > 0
        hist_parts.append(hist_pos[keep])
        target_parts.append(target_pos[keep])
        value_parts.append(value[keep])
    if not hist_parts:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0)
    return np.concatenate(hist_parts), np.concatenate(target_parts), np.concatenate(value_parts)


class _Entries:
    """``matrix[row, col]`` elementwise for a dense or sparse matrix, and its row sums."""

    def __init__(self, matrix: np.ndarray | sp.spmatrix) -> None:
        if sp.issparse(matrix):
            csr = sp.csr_matrix(matrix, dtype=np.float64, copy=True)
            csr.sum_duplicates()
            csr.sort_indices()  # the codes below must be sorted for the binary search
            self.n_cols = csr.shape[1]
            # Each stored entry as one sorted code row * n_cols + col, found by binary search.
            rows = np.repeat(np.arange(csr.shape[0], dtype=np.int64), np.diff(csr.indptr))
            self.codes, self.values, self.dense = rows * self.n_cols + csr.indices, csr.data, None
            self.row_sums = np.asarray(csr.sum(axis=1)).ravel()
        else:
            self.dense = np.asarray(matrix, dtype=np.float64)
            self.row_sums = self.dense.sum(axis=1)
        if np.any((self.values if self.dense is None else self.dense) < 0):
            raise ValueError("transition must be non-negative")

    def __call__(self, row: np.ndarray, col: np.ndarray) -> np.ndarray:
        if self.dense is not None:
            return self.dense[row, col]
        found = _lookup(self.codes, row.astype(np.int64) * self.n_cols + col)
        return np.where(found >= 0, self.values[np.maximum(found, 0)], 0.0)


def _flat(curves: np.ndarray) -> np.ndarray:
    """Per column, whether the curve is constant over the grid (to rounding)."""
    spread = curves.max(axis=0) - curves.min(axis=0)
    return spread <= 1e-9 * (1.0 + np.abs(curves).max(axis=0))


def _refine(curves: np.ndarray, log_grid: np.ndarray) -> np.ndarray:
    """Per column, the argmax over the grid refined by a parabola through it and its
    neighbours (in log2 h), clipped to the grid's range."""
    best = np.argmax(curves, axis=0)
    columns = np.arange(curves.shape[1])
    if len(log_grid) < 3:
        return log_grid[best]
    mid = np.clip(best, 1, len(log_grid) - 2)
    left, centre, right = curves[mid - 1, columns], curves[mid, columns], curves[mid + 1, columns]
    step = log_grid[mid + 1] - log_grid[mid]
    curvature = left - 2.0 * centre + right
    # Vertex of the parabola (uniform steps assumed locally); only where it is a maximum
    # and the argmax is interior, else the grid point itself.
    with np.errstate(invalid="ignore", divide="ignore"):
        shift = np.where(curvature < 0, 0.5 * (left - right) / curvature, 0.0)
    interior = (best > 0) & (best < len(log_grid) - 1)
    refined = np.where(interior, log_grid[mid] + np.clip(shift, -0.5, 0.5) * step, log_grid[best])
    return np.clip(refined, log_grid[0], log_grid[-1])


def _lookup(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Position of each key in ``sorted_keys``; -1 where absent."""
    if len(sorted_keys) == 0:
        return np.full(len(keys), -1, dtype=np.int64)
    pos = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return np.where(sorted_keys[pos] == keys, pos, -1).astype(np.int64)
