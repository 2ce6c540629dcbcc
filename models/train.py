"""Train the scorer under one protocol: search on validation, refit, test, beside the baselines.

For each phase (validation: fit on train; test: fit on train + validation) the fitting
events are cut again: the scorer learns from earlier histories to rank what came next, then
ranks the phase's real targets from the whole fitting history. ``label_windows`` cuts, going
back from the end: under P1 window ``w`` holds the events in the ``w``-th last
``label_share`` of the fitting events by time (history: everything before); under P2 it is
each user's ``w``-th last event. More windows, more users to learn from. A search
(Optuna, TPE) picks the hyperparameters on validation NDCG@10 with early stopping; the best
trial's settings and epoch count are refit for test.

Beside it, optionally, the sequence model (``models.sequence``): trained on the phase's
fitting data with early stopping on validation NDCG@10, then pointed at train + validation
for test without retraining (as RecBole evaluates). Whichever of the two scores better on
validation is the protocol's candidate for promotion.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from features.splits import split_p1, split_p2
from flows.config import ScorerSettings, TrainConfig
from models import metrics
from models.baselines import EASE, DecayedItemKNN, DecayedPopularity
from models.candidates import recall
from models.evaluate import context, measure, rank
from models.lm_score import ItemVectors
from models.protocols import Target, Task, encode
from models.ranking_data import History, View, feature_names, history, positives, view
from models.scorer import Scorer, ScorerNet, scores, top_items, train
from models.servable import Servable
from models.sequence import SequenceModel

log = logging.getLogger(__name__)


@dataclass
class Phase:
    """One phase's histories and targets: the inner ones to learn from, the real one to rank."""

    inner: list[tuple[History, Target]]
    outer: History
    target: Target


@dataclass
class Outcome:
    """One trained model's results under one protocol."""

    protocol: str
    model: Servable
    params: dict  # chosen hyperparameters (searched ones + epochs)
    valid: float  # validation NDCG@10 of the chosen settings
    test: dict[str, float]
    segments: dict[str, dict[str, float]]
    train_stats: dict
    users: int  # test users measured
    curve: list[float] = field(default_factory=list)  # validation score per epoch, when monitored
    trials: list[dict] = field(default_factory=list)  # the search's trials, when searched
    candidate_recall: dict[str, float] | None = None  # for models that rank candidates
    test_phase: Phase | None = None  # kept so that a champion can be measured on exactly this split

    @property
    def kind(self) -> str:
        return self.model.kind


def inner_split(protocol: str, fit: pd.DataFrame, label_share: float, window: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(history, labels) of label window ``window`` (1 = the latest) inside fitting events."""
    if protocol == "P2":
        for _ in range(window - 1):  # peel off each user's last event
            parts = split_p2(fit)
            fit = pd.concat([parts["train"], parts["valid"]], ignore_index=True)
        parts = split_p2(fit)
        return pd.concat([parts["train"], parts["valid"]], ignore_index=True), parts["test"]
    end = 1.0 - (window - 1) * label_share
    if end - label_share <= 0:
        raise ValueError(f"label window {window} of {label_share} leaves no history")
    parts = split_p1(fit, (end - label_share, label_share, 1.0 - end))
    return parts["train"], parts["valid"]


def phase(task: Task, items: pd.DataFrame, vectors: ItemVectors, features_cfg, settings: TrainConfig) -> Phase:
    """The histories and targets of ``task``, each target a seeded sample of
    ``settings.max_users`` (None: all), each history holding its target's users' state alone."""
    def sampled(target: Target, seed: int) -> tuple[Target, np.ndarray]:
        target = target.sample(settings.max_users, seed)
        return target, target.data.user_ids[target.rows]

    inner = []
    for window in range(1, settings.label_windows + 1):
        earlier, labels = inner_split(task.protocol, task.fit, settings.label_share, window)
        target, users = sampled(encode(Task(task.protocol, f"inner{window}", earlier, labels, earlier, task.repeats)), settings.seed + window)
        inner.append((history(earlier, items, vectors, features_cfg, users), target))
    target, users = sampled(encode(task), settings.seed)
    return Phase(inner, history(task.fit, items, vectors, features_cfg, users), target)


def views(p: Phase, hp: dict, settings: TrainConfig) -> tuple[list[tuple[View, np.ndarray]], View]:
    """Under hyperparameters ``hp``: the inner views to learn from, each with its positives,
    and the outer view to rank."""

    def one(h: History, target: Target) -> View:
        cf = DecayedItemKNN(k=settings.knn_k, half_life_days=hp["half_life_days"]).fit(h.data)
        ease = EASE(reg=hp["ease_reg"], max_items=settings.ease_max_items).fit(h.data)
        pop = DecayedPopularity(half_life_days=settings.pop_half_life_days).fit(h.data)
        return view(h, target.rows, cf, ease, pop, hp["alpha"], settings.candidates, target.repeats)

    learn = []
    for h, target in p.inner:
        v = one(h, target)
        learn.append((v, positives(v, target.truth)))
    return learn, one(p.outer, p.target)


def ndcg(net: ScorerNet, v: View, target: Target, k: int = 10) -> float:
    top = top_items(net, v, k)
    return float(np.nanmean(metrics.ranking_metrics(top, target.truth, k)["ndcg"]))


def scorer_params(hp: dict, base: ScorerSettings) -> ScorerSettings:
    keys = ("lr", "hidden", "dropout", "weight_decay")
    return base.model_copy(update={k: hp[k] for k in keys if k in hp})


def search(p: Phase, settings: TrainConfig) -> tuple[dict, float, list[dict], float]:
    """Optuna TPE over the space; each trial trains with early stopping on validation.

    Returns:
        ``(best hyperparameters with epochs, best validation NDCG@10, trial records, the
        best trial's candidate recall on validation)``.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = settings.space
    trials: list[dict] = []

    def objective(trial: optuna.Trial) -> float:
        hp = {
            "half_life_days": trial.suggest_float("half_life_days", *space.half_life_days, log=True),
            "alpha": trial.suggest_float("alpha", *space.alpha),
            "ease_reg": trial.suggest_float("ease_reg", *space.ease_reg, log=True),
            "lr": trial.suggest_float("lr", *space.lr, log=True),
            "hidden": trial.suggest_categorical("hidden", list(space.hidden)),
            "dropout": trial.suggest_float("dropout", *space.dropout),
            "weight_decay": trial.suggest_float("weight_decay", *space.weight_decay, log=True),
        }
        started = time.perf_counter()
        learn, rank = views(p, hp, settings)
        _, curve, stats = train(learn, scorer_params(hp, settings.scorer), monitor=lambda net: ndcg(net, rank, p.target))
        best = int(np.argmax(curve))
        record = {"trial": trial.number, **hp, "epochs": best + 1, "valid_ndcg_at_10": round(curve[best], 4),
                  "candidate_recall": recall(rank.items, p.target.truth),
                  "curve": [round(c, 4) for c in curve], "seconds": round(time.perf_counter() - started, 1), **stats}
        trials.append(record)
        trial.set_user_attr("epochs", best + 1)
        log.info("trial %d: valid ndcg@10 %.4f after %d epoch(s) %s", trial.number, curve[best], best + 1,
                 {k: (round(v, 4) if isinstance(v, float) else v) for k, v in hp.items()})
        return curve[best]

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=settings.seed))
    # The first trial is the defaults, so the search never ends below a sensible start.
    study.enqueue_trial(
        {"half_life_days": 7.0, "alpha": 0.25, "ease_reg": 1000.0, "lr": 3e-3, "hidden": 64, "dropout": 0.1, "weight_decay": 1e-5}
    )
    study.optimize(objective, n_trials=settings.trials, timeout=settings.timeout_s)
    best = study.best_trial
    return {**best.params, "epochs": best.user_attrs["epochs"]}, best.value, trials, trials[best.number]["candidate_recall"]


def p99_ms(net: ScorerNet, v: View, n: int, seed: int = 0) -> float:
    """p99 of scoring one user's candidates, in milliseconds (the serving path's model cost)."""
    rng = np.random.default_rng(seed)
    times = []
    for i in rng.integers(0, len(v.rows), size=min(n, len(v.rows))):
        single = View(v.history, v.rows[i : i + 1], v.items[i : i + 1], v.features[i : i + 1])
        started = time.perf_counter()
        scores(net, single)
        times.append((time.perf_counter() - started) * 1000)
    return float(np.percentile(times, 99)) if times else float("nan")


def run(phases: dict[str, Task], items: pd.DataFrame, vectors: ItemVectors, features_cfg, segments,
        settings: TrainConfig) -> Outcome:
    """Search on validation, refit on train + validation, measure on test (``phases``: a
    protocol's ``models.protocols.tasks``)."""
    protocol = phases["test"].protocol
    started = time.perf_counter()
    searched = settings.model_copy(update={"max_users": settings.search_max_users or settings.max_users})
    valid = phase(phases["valid"], items, vectors, features_cfg, searched)
    log.info("%s: validation histories ready in %.1fs; searching %d trial(s)", protocol, time.perf_counter() - started, settings.trials)
    hp, valid_score, trials, valid_recall = search(valid, settings)
    test = phase(phases["test"], items, vectors, features_cfg, settings)
    learn, rank = views(test, hp, settings)
    net, _, stats = train(learn, scorer_params(hp, settings.scorer), epochs=hp["epochs"])
    overall, segs, rank = measure_net(net, hp, test, items, segments, settings, rank)
    candidate_recall = {"valid": valid_recall, "test": recall(rank.items, test.target.truth)}
    log.info("%s scorer: test ndcg@10 %.4f (candidate recall %.3f)", protocol, overall["ndcg_at_10"], candidate_recall["test"])
    scorer = Scorer(net, scorer_params(hp, settings.scorer), hp, feature_names(phases["test"].repeats))
    return Outcome(protocol, scorer, hp, valid_score, overall, segs, stats,
                   len(test.target.rows), trials=trials, candidate_recall=candidate_recall, test_phase=test)


def measure_net(net: ScorerNet, hp: dict, p: Phase, items: pd.DataFrame, segments, settings: TrainConfig,
                rank: View | None = None):
    """Test metrics (at 10 and 20, with segments and the p99 scoring latency) of a trained net;
    ``rank``: the phase's view under ``hp``, when the caller has it already."""
    if rank is None:
        _, rank = views(p, hp, settings)
    top = top_items(net, rank, 20)
    overall, segs = measure(top, p.target, context(p.target, items, segments), [10, 20], segments)
    overall["p99_score_ms"] = p99_ms(net, rank, settings.p99_users, settings.seed)
    return overall, segs, rank


def ranked_ndcg(model, target: Target, k: int = 10) -> float:
    top, _ = rank(model, target, k, 1024)
    return float(np.nanmean(metrics.ranking_metrics(top, target.truth, k)["ndcg"]))


def run_sequence(phases: dict[str, Task], items: pd.DataFrame, vectors: ItemVectors, segments,
                 settings: TrainConfig) -> Outcome:
    """Train on the validation phase's fitting data (early stopping on its NDCG@10), then
    rank test from train + validation with the same weights."""
    p, protocol = settings.sequence, phases["test"].protocol
    valid, test = (encode(phases[part]).sample(settings.max_users, settings.seed) for part in ("valid", "test"))
    log.info("%s: sequence model on %s users' last %d events", protocol, f"{valid.data.n_users:,}", p.max_len)
    model = SequenceModel(item_vectors=vectors, params=p)
    curve = model.train(valid.data, monitor=lambda m: ranked_ndcg(m, valid))
    model.bind(test.data)
    overall, segs = measure_model(model, test, items, segments, settings)
    log.info("%s sequence: test ndcg@10 %.4f", protocol, overall["ndcg_at_10"])
    chosen = {"epochs": int(np.argmax(curve)) + 1 if curve else model.stats_["epochs"], "lr": p.lr, "dim": p.dim,
              "blocks": p.blocks, "max_len": p.max_len}
    return Outcome(protocol, model, chosen, max(curve, default=float("nan")), overall, segs, model.stats_, len(test.rows),
                   curve=curve)


def measure_model(model, target: Target, items: pd.DataFrame, segments, settings: TrainConfig):
    """Test metrics (at 10 and 20, with segments and the p99 scoring latency) of a model
    that ranks the whole catalogue."""
    top, _ = rank(model, target, 20, 1024)
    overall, segs = measure(top, target, context(target, items, segments), [10, 20], segments)
    rng = np.random.default_rng(settings.seed)
    times = []
    for row in rng.choice(target.rows, size=min(settings.p99_users, len(target.rows)), replace=False):
        started = time.perf_counter()
        model.score(np.array([row]))
        times.append((time.perf_counter() - started) * 1000)
    overall["p99_score_ms"] = float(np.percentile(times, 99)) if times else float("nan")
    return overall, segs


def write_trials(outcome: Outcome, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"trials_{outcome.protocol}.jsonl"
    path.write_text("".join(json.dumps(t) + "\n" for t in outcome.trials))
    return path
