"""The trainable scorer: an MLP over candidate features and the LM vectors, in torch.

Input per user-item pair: the features of ``models.ranking_data.feature_names`` (standardised
with statistics of the training examples) and the elementwise product of a learnt low-rank
projection of the user's LM profile and of the item's LM vector, so that the text vectors
themselves take part without a 384-wide input per pair. Output: one score; a user's
candidates are ranked by it.

Training: each positive (a candidate the user went on to touch) against ``negatives``
candidates sampled from the same user's non-positive candidates, softmax cross-entropy
(sampled softmax). Seeds fixed: on the bundled data a run is bit-for-bit repeatable (a test
checks it); on ml-1m two runs with identical features agreed for four epochs, then parted in
the 4th decimal (the cause not traced), ending .0853 and .0880 NDCG@10 on P2.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from flows.config import ScorerSettings
from models.ranking_data import FEATURES, View, feature_names
from models.servable import EarlyStopping

log = logging.getLogger(__name__)


class ScorerNet(nn.Module):
    def __init__(self, n_features: int, dim: int, hidden: int, proj: int, dropout: float) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))
        self.proj = nn.Linear(dim, proj, bias=False)
        self.mlp = nn.Sequential(
            nn.Linear(n_features + proj, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, 1),
        )

    def forward(
        self, features: torch.Tensor, user_vec: torch.Tensor, items: torch.Tensor, item_vectors: torch.Tensor
    ) -> torch.Tensor:
        """``(B, W, F)`` features, ``(B, d)`` profiles, ``(B, W)`` item columns (-1 = none)
        and the ``(n_items, d)`` item vectors -> ``(B, W)`` scores."""
        # Project the catalogue once, then gather: far cheaper than projecting per candidate.
        return self.score_projected(features, user_vec, items, self.proj(item_vectors))

    def score_projected(
        self, features: torch.Tensor, user_vec: torch.Tensor, items: torch.Tensor, projected: torch.Tensor
    ) -> torch.Tensor:
        """``forward`` with the catalogue already projected (``self.proj(item_vectors)``):
        the service projects it once, not per request."""
        dense = (features - self.mean) / self.std
        chosen = projected[items.clamp(min=0)] * (items >= 0)[..., None]
        text = self.proj(user_vec)[:, None, :] * chosen
        return self.mlp(torch.cat([dense, text], dim=-1)).squeeze(-1)


def _batch(v: View, idx: np.ndarray) -> tuple[torch.Tensor, ...]:
    h = v.history
    return (
        torch.from_numpy(v.features[idx]),
        torch.from_numpy(h.profiles[v.rows[idx]]),
        torch.from_numpy(v.items[idx]),
        torch.from_numpy(h.item_vectors),
    )


def scores(net: ScorerNet, v: View, batch_users: int = 512) -> np.ndarray:
    """``(len(rows), width)`` scores of each row's candidates; padding gets ``-inf``."""
    net.eval()
    out = np.empty(v.items.shape, dtype=np.float32)
    with torch.no_grad():
        for start in range(0, len(v.rows), batch_users):
            idx = np.arange(start, min(start + batch_users, len(v.rows)))
            out[idx] = net(*_batch(v, idx)).numpy()
    out[v.items < 0] = -np.inf
    return out


def top_items(net: ScorerNet, v: View, k: int) -> np.ndarray:
    """``(len(rows), k)`` item columns, best first, ``-1`` where a row has fewer candidates.

    Candidates hold no item the user may not get (``Signals.exclude``), so this is the full
    ranking with every other non-candidate item below every candidate."""
    from models import metrics

    position = metrics.top_k(scores(net, v), None, k)
    items = np.take_along_axis(v.items, np.maximum(position, 0), axis=1)
    return np.where(position >= 0, items, -1)


def train(
    learn: list[tuple[View, np.ndarray]],
    params: ScorerSettings,
    monitor: Callable[[ScorerNet], float] | None = None,
    epochs: int | None = None,
) -> tuple[ScorerNet, list[float], dict]:
    """Fit a scorer on the candidates of each view, its ``positive`` mask marking the ones
    to rank first.

    With ``monitor`` (a validation score, higher is better) training stops after
    ``patience`` epochs without improvement and returns the best epoch's weights; otherwise
    it runs ``epochs`` epochs (a refit with the epoch count the search found).

    Returns:
        ``(net, validation scores per epoch, stats)``.
    """
    torch.manual_seed(params.seed)
    rng = np.random.default_rng(params.seed)
    # (view, user) pairs with something to learn: a positive among the candidates.
    pairs_of = [(i, u) for i, (_, positive) in enumerate(learn) for u in np.flatnonzero(positive.any(axis=1))]
    if not pairs_of:
        raise ValueError("no user has a positive among their candidates: nothing to learn")
    units = np.array(pairs_of, dtype=np.int64)
    net = ScorerNet(learn[0][0].features.shape[-1], learn[0][0].history.item_vectors.shape[1], params.hidden, params.proj, params.dropout)
    chunks = []
    for i, (v, _) in enumerate(learn):
        users = units[units[:, 0] == i, 1]
        chunks.append(v.features[users][v.items[users] >= 0])
    sample = np.concatenate(chunks)
    net.mean.copy_(torch.from_numpy(sample.mean(axis=0)))
    net.std.copy_(torch.from_numpy(np.maximum(sample.std(axis=0), 1e-6)))
    optimiser = torch.optim.AdamW(net.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    stopping = EarlyStopping(net, params.patience)
    pairs, started = 0, time.perf_counter()
    for epoch in range(epochs or params.max_epochs):
        net.train()
        order = units[rng.permutation(len(units))]
        for start in range(0, len(order), params.batch_users):
            batch = order[start : start + params.batch_users]
            # A batch mixes views; each view's users go through the net together.
            losses, n = [], 0
            for i in np.unique(batch[:, 0]):
                v, positive = learn[i]
                idx = batch[batch[:, 0] == i, 1]
                loss, count = _loss(net, v, idx, positive[idx], params.negatives, rng)
                losses.append(loss * count)
                n += count
            optimiser.zero_grad()
            (torch.stack(losses).sum() / n).backward()
            optimiser.step()
            pairs += n
        if monitor is None:
            continue
        score = monitor(net)
        log.info("  epoch %d: validation %.4f", epoch + 1, score)
        if stopping.update(score):
            break
    stopping.restore()
    elapsed = time.perf_counter() - started
    stats = {"train_s": round(elapsed, 2), "pairs": pairs, "pairs_per_s": round(pairs / max(elapsed, 1e-9)), "users": len(units)}
    return net.eval(), stopping.curve, stats


def _loss(net: ScorerNet, v: View, idx: np.ndarray, positive: np.ndarray, k: int, rng) -> tuple[torch.Tensor, int]:
    """Sampled softmax: each positive against ``k`` of its user's other candidates.

    Only those columns go through the net: a user has hundreds of candidates, the loss
    reads one or a few positives and ``k`` negatives (ten times less work per step)."""
    items = v.items[idx]
    candidates = (items >= 0) & ~positive
    # Random keys, -inf where not a negative: the top k keys are a uniform sample.
    keys = np.where(candidates, rng.random(candidates.shape), -np.inf)
    k = min(k, keys.shape[1])
    negatives = np.argpartition(-keys, k - 1, axis=1)[:, :k]
    usable = torch.from_numpy(np.take_along_axis(candidates, negatives, axis=1))
    rows, cols = np.nonzero(positive)
    h = v.history
    projected = net.proj(torch.from_numpy(h.item_vectors))  # once per step, shared by both calls
    profiles = torch.from_numpy(h.profiles[v.rows[idx]])
    negative_logits = net.score_projected(
        torch.from_numpy(v.features[idx[:, None], negatives]), profiles,
        torch.from_numpy(np.take_along_axis(items, negatives, axis=1)), projected,
    ).masked_fill(~usable, float("-inf"))
    positive_logits = net.score_projected(
        torch.from_numpy(v.features[idx[rows], cols][:, None]), profiles[torch.from_numpy(rows)],
        torch.from_numpy(items[rows, cols][:, None]), projected,
    )[:, 0]
    everything = torch.cat([positive_logits[:, None], negative_logits[torch.from_numpy(rows)]], dim=1)
    return (torch.logsumexp(everything, dim=1) - positive_logits).mean(), len(rows)


@dataclass
class Scorer:
    """A trained scorer as the registry stores it and the service loads it."""

    kind: ClassVar[str] = "scorer"
    net: ScorerNet
    settings: ScorerSettings  # what shaped the net (the searched hyperparameters applied)
    hp: dict  # the searched hyperparameters: candidate sources' too (half-life, EASE, alpha)
    features: tuple[str, ...] = FEATURES  # its inputs, in order (``ranking_data.feature_names``)

    def to_files(self, extra: dict) -> dict[str, bytes]:
        """Safetensors weights and a JSON config (``extra``: more to record, e.g. the LM)."""
        from safetensors.torch import save

        config = {"kind": self.kind, "features": list(self.features), "dim": self.net.proj.in_features,
                  "params": self.settings.model_dump(), "hp": self.hp, **extra}
        return {"weights.safetensors": save(self.net.state_dict()), "config.json": json.dumps(config, indent=1).encode()}

    @classmethod
    def from_files(cls, weights: bytes, config: bytes, vectors=None) -> tuple["Scorer", dict]:
        """A scorer from its stored files (safetensors: no code runs while loading)."""
        from safetensors.torch import load

        cfg = json.loads(config)
        known = [list(feature_names(repeats)) for repeats in (False, True)]
        if cfg["features"] not in known:
            raise ValueError(f"stored scorer expects features {cfg['features']}, this code makes {known[0]} (or, "
                             f"where the data set repeats, {known[1]})")
        p = ScorerSettings(**cfg["params"])
        net = ScorerNet(len(cfg["features"]), cfg["dim"], p.hidden, p.proj, p.dropout)
        net.load_state_dict(load(weights))
        return cls(net.eval(), p, cfg.get("hp", {}), tuple(cfg["features"])), cfg
