"""Every model by name: the classical baselines, the repeat baseline and the models that read
item text vectors."""
from __future__ import annotations

from models.baselines import MODELS as BASELINES
from models.baselines import Recommender
from models.lm_score import DecayedCFWithLM, ItemVectors, LMScore
from models.repeat import OwnItems

MODELS: dict[str, type[Recommender]] = {**BASELINES, OwnItems.name: OwnItems, LMScore.name: LMScore,
                                        DecayedCFWithLM.name: DecayedCFWithLM}


def needs_vectors(name: str) -> bool:
    """Whether the model scores with item text vectors (``decayrec embed``)."""
    return bool(getattr(_model(name), "needs_vectors", False))


def make(name: str, vectors: ItemVectors | None = None, **params: object) -> Recommender:
    """A model by name with the given hyperparameters; ``vectors`` go to the models that
    need them and nowhere else."""
    model = _model(name)
    if needs_vectors(name):
        if vectors is None:
            raise ValueError(f"model {name!r} needs item vectors: run `decayrec embed` first")
        params = {**params, "item_vectors": vectors}
    return model(**params)


def _model(name: str) -> type[Recommender]:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {sorted(MODELS)}") from None
