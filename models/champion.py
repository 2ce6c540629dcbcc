"""The champion's test metrics, to set beside a challenger's: stored ones when they were
measured on this very split, else measured now, as a challenger of its kind is measured."""
from __future__ import annotations

import logging

import pandas as pd

from flows.config import Params
from models.lm_score import ItemVectors
from models.protocols import Task
from models.registry import Registry
from models.servable import load

log = logging.getLogger(__name__)


def champion_metrics(registry: Registry, task: Task, data_version: str, items: pd.DataFrame, vectors: ItemVectors,
                     params: Params, phase=None) -> dict | None:
    """The champion's overall test metrics on ``task`` (a protocol's test task, whose split
    files hash to ``data_version``); None without a champion."""
    tag = registry.champion()
    if tag is None:
        return None
    labels = registry.info(tag)["labels"]
    if labels.get("data_version") == data_version and labels.get("protocol") == task.protocol:
        return registry.info(tag)["metrics"]
    log.info("measuring champion %s on this split (it was measured on another one)", tag)
    return measure_champion(registry, tag, task, items, vectors, params, phase)[0]


def measure_champion(registry: Registry, tag: str, task: Task, items: pd.DataFrame, vectors: ItemVectors,
                     params: Params, phase=None) -> tuple[dict, dict]:
    """``(overall, segments)`` test metrics of a registered model on ``task``; ``phase``
    (``models.train.Phase`` of ``task``) saves rebuilding a scorer's histories."""
    model, _ = load(registry.path(tag), vectors)
    return MEASURE[model.kind](model, task, items, vectors, params, phase)


def _measure_scorer(model, task: Task, items: pd.DataFrame, vectors: ItemVectors, params: Params, phase=None):
    from models.train import measure_net
    from models.train import phase as make_phase

    phase = phase if phase is not None else make_phase(task, items, vectors, params.features, params.train)
    overall, segs, _ = measure_net(model.net, model.hp, phase, items, params.evaluate.segments, params.train)
    return overall, segs


def _measure_sequence(model, task: Task, items: pd.DataFrame, vectors: ItemVectors, params: Params, phase=None):
    from models.protocols import encode
    from models.train import measure_model

    target = phase.target if phase is not None else encode(task).sample(params.train.max_users, params.train.seed)
    return measure_model(model.bind(target.data), target, items, params.evaluate.segments, params.train)


# A scorer ranks candidates built from point-in-time histories; a sequence model ranks the
# whole catalogue from the fitting data: what each is measured on differs.
MEASURE = {"scorer": _measure_scorer, "sequence": _measure_sequence}
