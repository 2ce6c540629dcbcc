"""Tune every baseline on validation, refit, and measure it on test under one protocol.

Ranking is full: every item of the fitting data, the user's hidden items excluded, ties
broken by item index (``models.metrics.top_k``).
"""
from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from models import metrics
from models.protocols import Target, Task, encode
from models.factory import make

log = logging.getLogger(__name__)

RANKING = ("precision", "recall", "ndcg", "mrr", "hit")


@dataclass
class ModelRun:
    """One model's outcome on one protocol."""

    name: str
    params: dict
    valid: float  # the tuning target on validation for the chosen params
    test: dict[str, float]  # overall test metrics
    segments: dict[str, dict[str, float]]  # segment -> metrics
    fit_s: float
    predict_s: float
    users: int
    trials: list[dict] = field(default_factory=list)
    top_scores: np.ndarray | None = None  # each evaluated user's best score, for plots


def grid(space: dict[str, list]) -> list[dict]:
    """Every combination of a grid, in a stable order."""
    keys = sorted(space)
    return [dict(zip(keys, values)) for values in itertools.product(*(space[k] for k in keys))]


def rank(model, target: Target, k: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k item columns and the best score of each evaluated user."""
    tops, best = [], []
    for start in range(0, len(target.rows), batch):
        rows = target.rows[start : start + batch]
        scores = model.score(rows)
        top = metrics.top_k(scores, target.hidden[start : start + batch], k)
        tops.append(top)
        picked = np.take_along_axis(scores, np.maximum(top[:, :1], 0), axis=1)[:, 0]
        best.append(np.where(top[:, 0] >= 0, picked, np.nan))
    if not tops:
        return np.empty((0, k), dtype=np.int64), np.empty(0)
    return np.vstack(tops), np.concatenate(best)


@dataclass(frozen=True)
class Context:
    """What the beyond-accuracy metrics need about items, aligned to a target's columns."""

    vectors: object  # item x category matrix (csr) for diversity
    share: np.ndarray  # item share of fitting interactions, for novelty
    tail: np.ndarray  # boolean: item outside the popular head
    cold: np.ndarray  # boolean: item with few users in the fitting data


def context(target: Target, items: pd.DataFrame, segments) -> Context:
    import scipy.sparse as sp

    data = target.data
    catalogue = items.set_index("item_id")["categories"]
    cats = [list(catalogue.get(i, [])) for i in data.item_ids]
    names = sorted({c for row in cats for c in row})
    col = {c: j for j, c in enumerate(names)}
    rows = np.repeat(np.arange(len(cats)), [len(row) for row in cats])
    cols = np.array([col[c] for row in cats for c in row], dtype=np.int64)
    vectors = sp.csr_matrix(
        (np.ones(len(cols), dtype=np.float32), (rows, cols)), shape=(data.n_items, max(len(names), 1))
    )
    fitted = data.matrix()
    share = metrics.popularity_share(fitted)
    counts = metrics.item_event_counts(fitted)
    tail = metrics.long_tail_items(counts, segments.head_share)
    return Context(vectors, share, tail, counts < segments.cold_item_events)


def measure(top: np.ndarray, target: Target, ctx: Context, ks: list[int], seg) -> tuple[dict, dict]:
    """Overall metrics at every k, and the metrics at the first k by user segment."""
    overall: dict[str, float] = {}
    per_user_first: dict[str, np.ndarray] = {}
    for k in ks:
        top_k = top[:, :k]
        per_user = metrics.ranking_metrics(top_k, target.truth, k)
        per_user["ild"] = metrics.intra_list_diversity(top_k, ctx.vectors)
        per_user["novelty"] = metrics.novelty(top_k, ctx.share)
        for name, value in metrics.summarise(per_user).items():
            overall[f"{name}_at_{k}"] = value
        overall[f"coverage_at_{k}"] = metrics.coverage(top_k, target.data.n_items)
        if k == ks[0]:
            per_user_first = per_user
    k = ks[0]
    history = metrics.user_event_counts(target.data.matrix())[target.rows]
    masks = {
        "all": np.ones(len(target.rows), dtype=bool),
        "cold_users": metrics.cold_users(history, seg.cold_user_events),
        "active_users": metrics.active_users(history, seg.active_user_share),
    }
    segments = {
        name: {**metrics.summarise(per_user_first, mask), "users": int(mask.sum())}
        for name, mask in masks.items()
    }
    # Recall on those target items only: can a model find what the crowd has barely seen?
    for name, items in (("long_tail_items", ctx.tail), ("cold_items", ctx.cold)):
        recall = metrics.long_tail_recall(top[:, :k], target.truth, items, k)
        segments[name] = {**metrics.summarise({"recall": recall}), "users": int(np.isfinite(recall).sum())}
    return overall, segments


def tune(
    name: str, space: dict[str, list], valid: Target, ctx: Context, cfg, vectors=None
) -> tuple[dict, float, list[dict]]:
    """The grid point with the best validation target (first wins ties: grids are ordered)."""
    trials = []
    k = int(cfg.target.rsplit("_", 1)[-1])
    for params in grid(space):
        model = make(name, vectors, **params).fit(valid.data)
        top, _ = rank(model, valid, max(cfg.k), cfg.score_batch)
        overall, _ = measure(top, valid, ctx, [k], cfg.segments)
        trials.append({**params, cfg.target: overall[cfg.target]})
        log.info("  %s %s: valid %s %.4f", name, params, cfg.target, overall[cfg.target])
    best = max(range(len(trials)), key=lambda i: (trials[i][cfg.target], -i))
    chosen = {k_: v for k_, v in trials[best].items() if k_ != cfg.target}
    return chosen, trials[best][cfg.target], trials


def evaluate_protocol(tasks: dict[str, Task], items: pd.DataFrame, cfg, vectors=None) -> list[ModelRun]:
    """Every configured model: tuned on validation, refit and measured on test.

    ``vectors`` (``models.lm_score.ItemVectors``) feed the models that read item text."""
    valid, test = encode(tasks["valid"]).sample(cfg.max_users, 0), encode(tasks["test"]).sample(cfg.max_users, 0)
    valid_ctx = context(valid, items, cfg.segments)
    test_ctx = context(test, items, cfg.segments)
    runs = []
    for name, space in cfg.models.items():
        log.info("%s %s: tuning %d setting(s) on validation", tasks["test"].protocol, name, len(grid(space)))
        chosen, valid_score, trials = tune(name, space, valid, valid_ctx, cfg, vectors)
        started = time.perf_counter()
        model = make(name, vectors, **chosen).fit(test.data)
        fitted = time.perf_counter()
        top, best = rank(model, test, max(cfg.k), cfg.score_batch)
        predicted = time.perf_counter()
        overall, segments = measure(top, test, test_ctx, cfg.k, cfg.segments)
        runs.append(
            ModelRun(
                name, chosen, valid_score, overall, segments,
                round(fitted - started, 3), round(predicted - fitted, 3), len(test.rows), trials, best,
            )
        )
        log.info("%s %s %s: test ndcg@%d %.4f", tasks["test"].protocol, name, chosen, cfg.k[0], overall[f"ndcg_at_{cfg.k[0]}"])
    return runs
