"""Classical recommenders on one small contract, and the decayed + LM combined scorer.

Every model is a ``Recommender``: ``fit(data)`` on an ``Interactions`` and ``score(rows)``
returning float32 ``(len(rows), data.n_items)`` scores, higher is better. Seen items are NOT
excluded here; the caller hides them. Each model is a dataclass whose fields are its
hyperparameters, with their defaults beside them; ``make(name, **params)`` builds one by name.

Reference implementations the maths follows:

- ItemKNN: RecBole ``general_recommender/itemknn.py`` (``ComputeSimilarity``).
- SAR: Microsoft Recommenders ``models/sar/sar_singlenode.py``.
- EASE: Steck (WWW 2019) and RecBole ``general_recommender/ease.py``.
"""
from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import ClassVar, Literal, Self

import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack

from features.decay import exponential, linear, time_windows
from features.learned_decay import LearnedDecay, UserHalfLives, fit_user_half_lives, holdout_mask
from models.interactions import Interactions
from models.metrics import best

# Rows scored per batch: bounds the dense intermediates to BATCH_ROWS x n_items.
BATCH_ROWS = 2048
# Elements of one dense block while building a similarity (about 64 MiB of float32).
_BLOCK_ELEMENTS = 16_000_000
# Similarities kept for reuse, at most this many bytes (ml-latest-small's dense SAR
# similarity is 380 MB; item-KNN's top-250 one, 20 MB).
_CACHE_BYTES = 1 << 30


# ---------------------------------------------------------------- similarity cache

_similarities: dict[tuple, tuple[weakref.ref, object, int]] = {}


def similarity_of(data: Interactions, key: tuple, compute: Callable[[], object]):
    """``compute()``, once per ``data`` (by identity) and ``key``.

    Item-item similarities depend on the events only, not on the decay: the search and the
    baseline grids refit item-KNN and SAR on the same events under other half-lives, and
    used to rebuild the same matrix each time. Entries go when their ``data`` is collected,
    or oldest first past ``_CACHE_BYTES``; callers must not modify what they get.
    """
    slot = (id(data), *key)
    found = _similarities.get(slot)
    if found is not None and found[0]() is data:
        return found[1]
    value = compute()
    size = value.nbytes if isinstance(value, np.ndarray) else value.data.nbytes + value.indices.nbytes + value.indptr.nbytes
    _similarities[slot] = (weakref.ref(data, lambda _ref, slot=slot: _similarities.pop(slot, None)), value, size)
    while sum(entry[2] for entry in _similarities.values()) > _CACHE_BYTES and len(_similarities) > 1:
        _similarities.pop(next(iter(_similarities)))
    return value


class Recommender:
    """Contract shared by every model (like RecBole's ``full_sort_predict``)."""

    name: ClassVar[str] = "recommender"

    def fit(self, data: Interactions) -> Self:
        """Learn from ``data``; returns ``self`` so that ``make(...).fit(data)`` chains."""
        self.n_users_, self.n_items_ = data.n_users, data.n_items
        self._fit(data)
        return self

    def score(self, rows: np.ndarray) -> np.ndarray:
        """Scores of every item for the users at ``rows`` (rows of the fitting data).

        Returns:
            float32 array of shape ``(len(rows), n_items)``.
        """
        if not hasattr(self, "n_items_"):
            raise RuntimeError(f"{type(self).__name__} must be fitted before scoring")
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if len(rows) and (rows.min() < 0 or rows.max() >= self.n_users_):
            # -1 is Interactions.rows_of's "unknown user": never let it index the last row.
            raise ValueError(f"rows must lie in [0, {self.n_users_}); got {rows.min()}..{rows.max()}")
        out = np.empty((len(rows), self.n_items_), dtype=np.float32)
        for start in range(0, len(rows), BATCH_ROWS):
            batch = rows[start : start + BATCH_ROWS]
            out[start : start + len(batch)] = self._score_batch(batch)
        return out

    def _fit(self, data: Interactions) -> None:
        raise NotImplementedError

    def _score_batch(self, rows: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def decay(age_days: np.ndarray, half_life_days: float | np.ndarray) -> np.ndarray:
    """``2 ** (-age / half_life)``: 1 now, 0.5 one half-life ago; negative ages weigh 1.

    ``half_life_days`` may be one per event (``features.decay.exponential``)."""
    return exponential(age_days, half_life_days)


# "learned": a half-life per user, fitted on the fitting data (features.learned_decay).
HalfLife = float | Literal["learned"]
DecayName = Literal["exponential", "linear", "window"]


@dataclass
class Decayed:
    """The decay kind of a decayed model, chosen in ``params.yaml`` (``evaluate.models``).

    - ``exponential``: ``2 ** (-age / half_life)``;
    - ``linear``: ``max(0, 1 - age / (2 half_life))``, so that ``half_life_days`` means the
      same age of half weight for both and one grid tunes either; gone at twice that age;
    - ``window``: the weight of the age bucket (``features.decay.time_windows``), set by
      ``window_days`` and ``window_weights``; ``half_life_days`` plays no part.

    A learned half-life is per user and exponential only.
    """

    decay: DecayName = "exponential"
    window_days: tuple[float, ...] = (7.0, 30.0, 90.0, 365.0)
    window_weights: tuple[float, ...] = (8.0, 4.0, 2.0, 1.0)

    def __post_init__(self) -> None:
        # Fail at construction, before a learned fit spends minutes on a useless setting.
        if self.decay not in ("exponential", "linear", "window"):
            raise ValueError(f"unknown decay {self.decay!r}; known: exponential, linear, window")
        if self.decay == "window":
            time_windows(np.zeros(1), list(self.window_days), list(self.window_weights))  # validates
        if self.decay != "exponential" and getattr(self, "half_life_days", None) == "learned":
            raise ValueError(f"a learned half-life needs decay 'exponential', not {self.decay!r}")

    def _weigh(self, age_days: np.ndarray, half_life_days: float | np.ndarray) -> np.ndarray:
        """Weight of events ``age_days`` old under this model's decay (negative ages weigh 1)."""
        if self.decay == "exponential":
            return decay(age_days, half_life_days)
        if np.ndim(half_life_days):
            raise ValueError(f"a learned half-life needs decay 'exponential', not {self.decay!r}")
        if self.decay == "linear":
            decay(np.zeros(1), half_life_days)  # validates
            return linear(age_days, rate_per_day=0.5 / float(half_life_days))
        return time_windows(age_days, list(self.window_days), list(self.window_weights))
Transition = Callable[[sp.csr_matrix], np.ndarray | sp.spmatrix]


def user_half_lives(
    data: Interactions, half_life_days: HalfLife, learned: LearnedDecay | dict, transition: Transition
) -> tuple[np.ndarray, UserHalfLives | None]:
    """Per user row, the half-life a decayed model uses, and the fit when it was learned.

    A fixed half-life is repeated per user. ``"learned"`` fits one per user with
    ``features.learned_decay.fit_user_half_lives`` on ``data`` alone: the last ``holdout`` share of
    its events are the targets, predicted through the model's own scoring matrix, which
    ``transition(binary user x item matrix)`` builds from the OTHER events only, so that
    the targets never leak into the similarity that predicts them.
    """
    if not isinstance(half_life_days, str):
        decay(np.zeros(1), half_life_days)  # validates
        return np.full(data.n_users, float(half_life_days)), None
    if half_life_days != "learned":
        raise ValueError(f"half_life_days must be a positive number or 'learned', got {half_life_days!r}")
    config = LearnedDecay(**learned) if isinstance(learned, dict) else learned
    if isinstance(config.grid_days, list):  # from YAML: a list where the dataclass has a tuple
        config = replace(config, grid_days=tuple(config.grid_days))
    held = holdout_mask(data.users, data.seconds, config.holdout, config.holdout_by)
    history = sp.csr_matrix(
        (np.ones(int((~held).sum()), dtype=np.float32), (data.users[~held], data.items[~held])),
        shape=(data.n_users, data.n_items),
    )
    history.sum_duplicates()
    history.data[:] = 1.0
    fit = fit_user_half_lives(data.users, data.items, data.seconds, transition(history), config=config)
    return fit.of(np.arange(data.n_users)), fit


# ---------------------------------------------------------------- popularity


@dataclass
class Popularity(Recommender):
    """Items ranked by how many distinct users interacted with them."""

    name: ClassVar[str] = "pop"

    def _fit(self, data: Interactions) -> None:
        counts = np.asarray(data.matrix().sum(axis=0)).ravel()
        self.item_scores_ = counts.astype(np.float32)

    def _score_batch(self, rows: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.item_scores_, (len(rows), self.n_items_))


@dataclass
class DecayedPopularity(Decayed, Recommender):
    """Items ranked by the sum over their events of ``2 ** (-age / half_life)`` (or of the
    weight of another ``decay``, see ``Decayed``), ages counted from ``data.now``."""

    name: ClassVar[str] = "pop_decay"
    half_life_days: float = 30.0  # Microsoft SAR's default half-life

    def _fit(self, data: Interactions) -> None:
        weights = self._weigh(data.age_days(), self.half_life_days)
        self.item_scores_ = np.bincount(data.items, weights=weights, minlength=data.n_items).astype(np.float32)

    def _score_batch(self, rows: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.item_scores_, (len(rows), self.n_items_))


# ---------------------------------------------------------------- item-KNN


def cosine_topk(matrix: sp.csr_matrix, k: int, shrink: float = 0.0) -> sp.csr_matrix:
    """RecBole's ``ComputeSimilarity(matrix, topk=k, shrink).compute_items_similarity()``.

    ``W[i, j] = c_ij / (|x_i| |x_j| + shrink + 1e-6)`` with ``c_ij = x_i . x_j`` over the
    columns of ``matrix``, ``W[j, j] = 0``; each COLUMN ``j`` (the item being scored) keeps its
    ``k`` largest non-zero entries, so ``score = X @ W`` sums, for item ``j``, the user's
    items among ``j``'s ``k`` nearest neighbours. float32 throughout, as RecBole.

    One deliberate difference: RecBole breaks ties at the k-th value with ``argpartition``
    (implementation-defined); here ties go to the lower item index.

    Returns:
        float32 CSR ``(n_items, n_items)``.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    matrix = sp.csr_matrix(matrix, dtype=np.float32)
    n = matrix.shape[1]
    k = min(k, n)
    norms = np.sqrt(np.asarray(matrix.power(2).sum(axis=0), dtype=np.float32).ravel())
    items = matrix.T.tocsr()
    keep_rows, keep_cols, keep_vals = [], [], []
    # The gram a block of items at a time, kept sparse: its cost is the co-occurring pairs,
    # where dense blocks cost n^2 (200k items: 2,500 blocks of 16M cells).
    block = max(1, _BLOCK_ELEMENTS // max(1, n))
    for start in range(0, n, block):
        stop = min(start + block, n)
        # Symmetric, so row j of the gram is column j of RecBole's block.
        gram = sp.csr_matrix(items[start:stop] @ matrix)
        gram.sort_indices()
        target = np.repeat(np.arange(start, stop), np.diff(gram.indptr))
        neighbour = gram.indices.astype(np.int64)
        denominator = norms[target] * norms[neighbour] + np.float32(shrink) + np.float32(1e-6)
        w = gram.data * (np.float32(1.0) / denominator)
        w[neighbour == target] = 0.0
        for r in range(stop - start):
            a, b = gram.indptr[r], gram.indptr[r + 1]
            values, columns = w[a:b], neighbour[a:b]
            nonzero = values != 0.0
            top = best(values[nonzero], columns[nonzero], k)
            keep_rows.append(top)
            keep_cols.append(np.full(len(top), start + r))
            keep_vals.append(values[np.searchsorted(columns, top)])
    rows = np.concatenate(keep_rows) if keep_rows else np.empty(0, np.int64)
    cols = np.concatenate(keep_cols) if keep_cols else np.empty(0, np.int64)
    vals = np.concatenate(keep_vals) if keep_vals else np.empty(0, np.float32)
    return sp.csr_matrix((vals.astype(np.float32), (rows, cols)), shape=(n, n), dtype=np.float32)


@dataclass
class ItemKNN(Recommender):
    """RecBole's ItemKNN: cosine on the binary user x item matrix, top-k per item."""

    name: ClassVar[str] = "itemknn"
    k: int = 250  # neighbours kept per scored item (RecBole's P0 setting)
    shrink: float = 0.0  # added to the cosine denominator

    def _fit(self, data: Interactions) -> None:
        binary = data.matrix()
        self.similarity_ = similarity_of(data, ("cosine", self.k, self.shrink), lambda: cosine_topk(binary, self.k, self.shrink))
        self.profile_ = self._profile(data, binary)

    def _profile(self, data: Interactions, binary: sp.csr_matrix) -> sp.csr_matrix:
        return binary

    def _score_batch(self, rows: np.ndarray) -> np.ndarray:
        return (self.profile_[rows] @ self.similarity_).toarray()

    def score_histories(self, data: Interactions) -> np.ndarray:
        """Scores for the users of ``data``, whose item columns are the fitted ones: histories
        that grew after fitting (the service's live users), through the fitted similarity."""
        return self.score_histories_sparse(data).toarray()

    def score_histories_sparse(self, data: Interactions) -> sp.csr_matrix:
        """``score_histories`` as stored: only the items some neighbour list reaches."""
        scores = sp.csr_matrix(self._history_profile(data) @ self.similarity_, dtype=np.float32)
        scores.eliminate_zeros()
        scores.sort_indices()
        return scores

    def _history_profile(self, data: Interactions) -> sp.csr_matrix:
        return data.matrix()


@dataclass
class DecayedItemKNN(ItemKNN, Decayed):
    """ItemKNN whose user profile weighs each item by ``2 ** (-age / half_life)``, the age
    being that of the user's latest event on the item (relative to ``data.now``).

    ``score`` is that textbook score times ``2 ** (age of the user's latest event / hl)``:
    the same ranking per user, without float32 underflow (see ``latest_decay_matrix``).
    Other kinds of ``decay`` (``Decayed``) count ages from the user's latest event too: the
    profile of a user who left a year ago is their interest as they left, not all zeros.

    ``half_life_days="learned"`` fits a half-life per user (``user_half_lives``, settings
    in ``learned_decay``) through this model's own cosine top-k similarity; ``half_lives_``
    holds the half-life of each user row either way.
    """

    name: ClassVar[str] = "itemknn_decay"
    k: int = 250
    shrink: float = 0.0
    half_life_days: HalfLife = 7.0  # chosen on P1 validation (BENCHMARK.md), or "learned"
    learned_decay: LearnedDecay | dict = field(default_factory=LearnedDecay)

    def _profile(self, data: Interactions, binary: sp.csr_matrix) -> sp.csr_matrix:
        self.half_lives_, self.learned_ = user_half_lives(
            data, self.half_life_days, self.learned_decay, lambda history: cosine_topk(history, self.k, self.shrink)
        )
        # Scaled per user (see latest_decay_matrix): same ranking, no float32 underflow.
        half_life = self.half_lives_ if isinstance(self.half_life_days, str) else float(self.half_life_days)
        profile = latest_decay_matrix(data, half_life, from_user_latest=True, weigh=self._weigh)
        return profile.astype(np.float32)

    def _history_profile(self, data: Interactions) -> sp.csr_matrix:
        if isinstance(self.half_life_days, str):
            raise ValueError("a learned half-life belongs to a fitted user: new histories need a fixed one")
        return latest_decay_matrix(data, float(self.half_life_days), from_user_latest=True, weigh=self._weigh).astype(np.float32)


def latest_decay_matrix(
    data: Interactions,
    half_life_days: float | np.ndarray,
    *,
    from_user_latest: bool = False,
    weigh: Callable[[np.ndarray, float | np.ndarray], np.ndarray] = decay,
) -> sp.csr_matrix:
    """User x item float64 CSR of ``2 ** (-age / half_life)`` of each pair's latest event.

    ``half_life_days``: one for all, or one per user row (a learned decay).

    With ``from_user_latest`` ages count from the user's own latest event instead of
    ``data.now``: every row is the textbook row times ``2 ** (age of u's latest / hl)``, a
    positive per-user constant, so each user's ranking is unchanged, while the weights stay
    in range (``2 ** (-1000 / 7)`` is below float32's range; 22 years at a one-day
    half-life underflow float64 too).
    """
    pair = data.users.astype(np.int64) * data.n_items + data.items
    order = np.lexsort((data.seconds, pair))
    last = np.ones(len(order), dtype=bool)
    last[:-1] = pair[order[1:]] != pair[order[:-1]]
    latest = order[last]
    ages = _ages(data, from_user_latest)[latest]
    half_life = np.asarray(half_life_days, dtype=np.float64)
    half_life = half_life[data.users[latest]] if half_life.ndim else half_life
    return sp.csr_matrix(
        (weigh(ages, half_life), (data.users[latest], data.items[latest])),
        shape=(data.n_users, data.n_items),
    )


def _ages(data: Interactions, from_user_latest: bool) -> np.ndarray:
    """Per event, days before ``data.now`` or, with ``from_user_latest``, before the latest
    event of its user (never negative)."""
    ages = data.age_days()
    if from_user_latest and len(ages):
        youngest = np.full(data.n_users, np.inf)
        np.minimum.at(youngest, data.users, ages)
        ages = ages - youngest[data.users]
    return ages


# ---------------------------------------------------------------- SAR


@dataclass
class SAR(Decayed, Recommender):
    """Microsoft Recommenders' SAR (single node) with its time-decay formula on.

    Affinity ``A[u, i] = sum over u's events on i of w * min(1, 0.5 ** ((now - t) / hl))``
    where ``w`` is 1 (BENCHMARK.md: every rating is an implicit interaction; its P2 anchor
    is measured so) or, with ``weight_by_value``, the event's value (SAR's rating column).
    Co-occurrence ``C = Xb^T Xb`` on the binary matrix, entries below ``threshold`` zeroed;
    similarity ``jaccard`` ``c_ij / (c_ii + c_jj - c_ij)``, ``lift`` ``c_ij / (c_ii c_jj)`` or
    ``cooccurrence`` ``c_ij``, diagonal kept as SAR does; ``score = A @ S``. The similarity is
    dense ``n_items x n_items`` float32, as in SAR. Where SAR yields NaN (an item whose own
    count is below ``threshold``), this yields 0.

    ``affinity_`` holds SAR's affinity exactly (float64); ``score`` uses it times
    ``2 ** (age of the user's latest event / hl)`` per user, the same ranking without float32
    underflow (at a 7-day half-life, most ml-1m users' affinities are below 1e-30).

    ``half_life_days="learned"`` fits a half-life per user (``user_half_lives``, settings
    in ``learned_decay``) through this model's own similarity; ``half_lives_`` holds the
    half-life of each user row either way. Another ``decay`` kind (``Decayed``) replaces
    SAR's formula in both, its profile ages counted from the user's latest event.
    """

    name: ClassVar[str] = "sar"
    half_life_days: HalfLife = 30.0  # SAR's default time_decay_coefficient, or "learned"
    similarity: Literal["jaccard", "lift", "cooccurrence"] = "jaccard"
    threshold: int = 1  # SAR's default: keep every co-occurrence
    weight_by_value: bool = False  # affinity sums event values (ratings) instead of 1s
    learned_decay: LearnedDecay | dict = field(default_factory=LearnedDecay)

    def _fit(self, data: Interactions) -> None:
        if self.similarity not in ("jaccard", "lift", "cooccurrence"):
            raise ValueError(f"unknown similarity {self.similarity!r}")
        if self.threshold < 1:
            raise ValueError("threshold cannot be < 1")
        self.half_lives_, self.learned_ = user_half_lives(
            data, self.half_life_days, self.learned_decay, self._similarity
        )
        # Per event: its user's half-life, or the one fixed half-life (bit-identical then).
        half_life = self.half_lives_[data.users] if isinstance(self.half_life_days, str) else float(self.half_life_days)
        values = data.values.astype(np.float64) if self.weight_by_value else np.ones(len(data.users))
        self.affinity_ = _summed(data, values * self._weigh(data.age_days(), half_life))
        scaled = values * self._weigh(_ages(data, from_user_latest=True), half_life)
        self.profile_ = _summed(data, scaled).astype(np.float32)
        self.similarity_ = similarity_of(data, ("sar", self.similarity, self.threshold), lambda: self._similarity(data.matrix()))

    def _similarity(self, binary: sp.csr_matrix) -> np.ndarray:
        """SAR's dense item x item similarity from a binary user x item matrix."""
        cooccurrence = (binary.T @ binary).tocsr()
        if self.threshold > 1:
            cooccurrence = cooccurrence.multiply(cooccurrence >= self.threshold).tocsr()
        # float32 in place: counts are integers below 2**24, exact in float32, and one
        # dense float64 copy of ml-latest-small's 9,724 items would be 760 MB.
        counts = cooccurrence.diagonal().astype(np.float32)
        dense = cooccurrence.toarray().astype(np.float32, copy=False)
        with np.errstate(invalid="ignore", divide="ignore"):
            if self.similarity == "jaccard":
                denominator = np.add.outer(counts, counts)
                denominator -= dense
                dense /= denominator
                del denominator
            elif self.similarity == "lift":
                dense /= np.multiply.outer(counts, counts)
        return np.nan_to_num(dense, copy=False, nan=0.0, posinf=0.0)

    def _score_batch(self, rows: np.ndarray) -> np.ndarray:
        return self.profile_[rows] @ self.similarity_


def _summed(data: Interactions, weights: np.ndarray) -> sp.csr_matrix:
    """User x item float64 CSR of ``weights`` summed over each pair's events."""
    matrix = sp.csr_matrix((weights, (data.users, data.items)), shape=(data.n_users, data.n_items))
    matrix.sum_duplicates()
    return matrix


# ---------------------------------------------------------------- EASE


@dataclass
class EASE(Recommender):
    """Steck's EASE^R: ``B = argmin |X - XB|^2 + reg |B|^2`` s.t. ``diag(B) = 0``.

    Closed form on the binary matrix: ``P = (X^T X + reg I)^-1``, ``B_ij = -P_ij / P_jj``,
    ``B_jj = 0``; ``score = X_u @ B``. The inverse is float64 via Cholesky (``G`` is
    symmetric positive definite), half the work of RecBole's ``np.linalg.inv``, same result
    to float64 rounding; ``B`` is kept as float32.

    The fit is cubic in items: ``max_items`` keeps the model to the most interacted-with
    items (ties by column), the others scoring 0. ml-latest-small's 9,724 items cost 14
    times 4,000's; ml-1m's 3,706 are under any cap in params.yaml.
    """

    name: ClassVar[str] = "ease"
    reg: float = 250.0  # lambda of BENCHMARK.md's ml-1m P2 anchor (P1 prefers far more)
    max_items: int | None = None  # None: every item

    def _fit(self, data: Interactions) -> None:
        if self.reg <= 0:
            raise ValueError(f"reg must be positive, got {self.reg}")
        binary = data.matrix()
        self.columns_ = np.arange(data.n_items)
        if self.max_items is not None and data.n_items > self.max_items:
            counts = np.asarray(binary.sum(axis=0)).ravel()
            self.columns_ = np.sort(np.argsort(-counts, kind="stable")[: self.max_items])
            binary = binary[:, self.columns_]
        gram = (binary.T @ binary).toarray().astype(np.float64)
        gram[np.diag_indices_from(gram)] += self.reg
        inverse = spd_inverse(gram)
        # B[:, j] = -P[:, j] / P[j, j], straight into float32.
        weights = np.empty(inverse.shape, dtype=np.float32)
        np.multiply(inverse, -1.0 / np.diag(inverse)[None, :], out=weights, casting="same_kind")
        np.fill_diagonal(weights, 0.0)
        self.profile_ = binary
        self.weights_ = weights

    def _score_batch(self, rows: np.ndarray) -> np.ndarray:
        return self._spread(self.profile_[rows] @ self.weights_)

    def score_histories(self, data: Interactions) -> np.ndarray:
        """Scores for the users of ``data`` over the fitted item columns (see ``ItemKNN``)."""
        return self._spread(self.score_kept(data))

    def score_kept(self, data: Interactions) -> np.ndarray:
        """Scores for the users of ``data`` at the kept columns ``columns_`` only."""
        matrix = data.matrix()
        if len(self.columns_) < self.n_items_:
            matrix = matrix[:, self.columns_]
        return np.asarray(matrix @ self.weights_, dtype=np.float32)

    def _spread(self, kept: np.ndarray) -> np.ndarray:
        if len(self.columns_) == self.n_items_:
            return kept
        out = np.zeros((kept.shape[0], self.n_items_), dtype=np.float32)
        out[:, self.columns_] = kept
        return out


def spd_inverse(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a symmetric positive definite float64 matrix (LAPACK potrf + potri).

    Only one triangle of ``matrix`` is read; a C-ordered ``matrix`` is overwritten."""
    # The transpose of a symmetric C-ordered matrix is itself in Fortran order: no copy.
    factor, info = lapack.dpotrf(matrix.T, lower=False, clean=False, overwrite_a=True)
    if info != 0:
        raise np.linalg.LinAlgError(f"matrix is not positive definite (potrf info {info})")
    inverse, info = lapack.dpotri(factor, lower=False, overwrite_c=True)
    if info != 0:
        raise np.linalg.LinAlgError(f"inversion failed (potri info {info})")
    # potri fills the upper triangle only: mirror it into the lower one.
    np.copyto(inverse, inverse.T, where=np.tri(len(inverse), k=-1, dtype=bool))
    return inverse


# ---------------------------------------------------------------- combined scorer


LMScores = Callable[[np.ndarray], np.ndarray]


@dataclass
class CombinedScorer(Recommender):
    """``I(t) = I0 * exp(-k t) + alpha * LM_score``.

    The decayed part is ``base`` (normally ``DecayedItemKNN``: its profile is
    ``I0 * 2 ** (-t / half_life) = I0 * exp(-k t)`` with ``k = ln 2 / half_life``); the LM part
    is ``lm_scores(rows) -> (len(rows), n_items)``, a hook the language-model backend fills.

    Normalisation: both parts are min-max scaled per user row over all items, to [0, 1]
    (a constant row becomes all 0). Raw base scores grow with the length and recency of a
    user's history, so without it one ``alpha`` would mean a different LM weight for every
    user; after it ``alpha`` is the LM's weight relative to the full spread of the user's
    base scores (``alpha = 1``: equal say). The scaling is increasing per row, so with
    ``alpha = 0`` or no hook the ranking is exactly ``base``'s. ``normalize_lm = False``
    adds the hook's raw scores instead (for scores already on a fixed scale, e.g. cosine).
    """

    name: ClassVar[str] = "combined"
    base: Recommender = field(default_factory=lambda: DecayedItemKNN())
    alpha: float = 0.0  # weight of the LM part
    lm_scores: LMScores | None = None  # rows -> (len(rows), n_items) LM scores
    normalize_lm: bool = True

    def _fit(self, data: Interactions) -> None:
        self.base.fit(data)

    def _score_batch(self, rows: np.ndarray) -> np.ndarray:
        scores = minmax_rows(self.base.score(rows))
        if self.alpha != 0.0 and self.lm_scores is not None:
            lm = np.asarray(self.lm_scores(rows), dtype=np.float32)
            if lm.shape != scores.shape:
                raise ValueError(f"lm_scores returned shape {lm.shape}, expected {scores.shape}")
            scores += np.float32(self.alpha) * (minmax_rows(lm) if self.normalize_lm else lm)
        return scores


def minmax_rows(scores: np.ndarray) -> np.ndarray:
    """Each row scaled to [0, 1] (``(s - min) / (max - min)``); constant rows become 0."""
    scores = np.asarray(scores, dtype=np.float32)
    low = scores.min(axis=1, keepdims=True)
    spread = scores.max(axis=1, keepdims=True) - low
    return np.divide(scores - low, spread, out=np.zeros_like(scores), where=spread > 0)


# ---------------------------------------------------------------- registry


MODELS: dict[str, type[Recommender]] = {
    model.name: model
    for model in (Popularity, DecayedPopularity, ItemKNN, DecayedItemKNN, SAR, EASE, CombinedScorer)
}
