"""The contract of a model the service can answer with, and the early stopping both
trainable models share.

A servable model has a ``kind`` (the registry label the service picks its answering code
by), stores itself as safetensors weights plus a JSON config (``to_files``; no code runs
while loading) and loads back from them (``from_files``). Measuring one is training's
business (``models.champion``): the service never imports what measurement needs.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol

import numpy as np

if TYPE_CHECKING:
    from torch import nn

    from models.lm_score import ItemVectors


class Servable(Protocol):
    kind: ClassVar[str]

    def to_files(self, extra: dict) -> dict[str, bytes]: ...

    @classmethod
    def from_files(cls, weights: bytes, config: bytes, vectors: ItemVectors) -> tuple[Servable, dict]: ...


def kinds() -> dict[str, type]:
    from models.scorer import Scorer
    from models.sequence import SequenceModel

    return {cls.kind: cls for cls in (Scorer, SequenceModel)}


def load(folder: Path, vectors: ItemVectors) -> tuple[Servable, dict]:
    """The model stored in ``folder`` (a registry entry), and its config."""
    weights, config = (folder / "weights.safetensors").read_bytes(), (folder / "config.json").read_bytes()
    # Scorers stored before kinds were recorded are scorers.
    kind = json.loads(config).get("kind", "scorer")
    known = kinds()
    if kind not in known:
        raise ValueError(f"{folder}/config.json: unknown model kind {kind!r}; known: {sorted(known)}")
    return known[kind].from_files(weights, config, vectors)


class EarlyStopping:
    """Keeps the weights of the best epoch by a validation score (higher is better) and says
    when ``patience`` epochs have gone by without improving on it."""

    def __init__(self, module: nn.Module, patience: int) -> None:
        self.module, self.patience = module, patience
        self.curve: list[float] = []
        self.best, self._state = -np.inf, None

    def update(self, score: float) -> bool:
        """Record one epoch's score; True when training should stop."""
        self.curve.append(score)
        if score > self.best:
            self.best, self._state = score, {k: t.clone() for k, t in self.module.state_dict().items()}
            return False
        return len(self.curve) - 1 - int(np.argmax(self.curve)) >= self.patience

    def restore(self) -> None:
        """Put the best epoch's weights back (none recorded: leave the module as it is)."""
        if self._state is not None:
            self.module.load_state_dict(self._state)
