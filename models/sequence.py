"""A sequence model over each user's recent items, with time-interval decay and LM item vectors.

In the spirit of SASRec (Kang & McAuley, 2018) and TiSASRec (Li et al., 2020): causal
self-attention over the user's last ``max_len`` items predicts the next one. Two changes:

- an item is its learnt id embedding plus a learnt projection of its LM text vector, so an
  item the model never saw in training still has a representation (its text);
- attention between two events fades with the time between them: each head adds
  ``-rate * log(1 + days apart)`` to its attention logits, with ``rate`` learnt per block and
  head (a decay in place of TiSASRec's interval embeddings; ``rate`` = 0 is plain SASRec).

Trained with softmax cross-entropy at every position: over the whole catalogue, or, with
``negatives`` set, over the next item and that many items drawn uniformly for the batch
(sampled softmax, as in Klenitskiy & Vasilev 2023: with a few thousand negatives it keeps
most of full cross-entropy's accuracy at a cost that does not grow with the catalogue; only
the items a batch touches are embedded). Seeds fixed; on CPU a run is repeatable. The model knows items by id: ``bind`` points a trained model at
another fitting data (e.g. train + validation) without retraining, as RecBole evaluates.
"""
from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from flows.config import SequenceSettings
from models.baselines import Recommender
from features.decay import SECONDS_PER_DAY
from features.ids import kind_of
from models.interactions import Interactions
from models.servable import EarlyStopping

log = logging.getLogger(__name__)


def sequences(data: Interactions, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Each user's last ``max_len`` events, oldest first, left-padded.

    Returns:
        ``(items, days)``, both ``(n_users, max_len)``: item columns + 1 (0 = padding) and
        event times in days (0 at padding). Events at the same second keep their file order.
    """
    order = np.lexsort((np.arange(len(data.users)), data.seconds, data.users))
    users = data.users[order]
    counts = np.bincount(users, minlength=data.n_users)
    ends = np.cumsum(counts)
    from_end = ends[users] - 1 - np.arange(len(users))  # 0 = the user's latest event
    keep = from_end < max_len
    items = np.zeros((data.n_users, max_len), dtype=np.int64)
    days = np.zeros((data.n_users, max_len), dtype=np.float32)
    cols = max_len - 1 - from_end[keep]
    items[users[keep], cols] = data.items[order][keep] + 1
    # Relative to the data's first event: float32 keeps sub-minute precision over decades.
    start = data.seconds.min() if len(data.seconds) else 0.0
    days[users[keep], cols] = (data.seconds[order][keep] - start) / SECONDS_PER_DAY
    return items, days


class Block(nn.Module):
    """Pre-norm causal self-attention with an additive time bias, then a feed-forward layer."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.out = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.ff = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim, dim))
        self.drop = nn.Dropout(dropout)
        # softplus(-2.25) ~ 0.1: a gentle decay to start from.
        self.rate = nn.Parameter(torch.full((heads,), -2.25))

    def forward(self, x: torch.Tensor, mask: torch.Tensor, log_gap: torch.Tensor | None) -> torch.Tensor:
        b, length, dim = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        logits = q @ k.transpose(-1, -2) / math.sqrt(dim // self.heads)  # (B, H, L, L)
        if log_gap is not None:
            logits = logits - F.softplus(self.rate)[None, :, None, None] * log_gap[:, None]
        attention = self.drop(torch.softmax(logits.masked_fill(~mask[:, None], float("-inf")), dim=-1))
        x = x + self.drop(self.out((attention @ v).transpose(1, 2).reshape(b, length, dim)))
        return x + self.drop(self.ff(self.norm2(x)))


class SequenceNet(nn.Module):
    def __init__(self, vocabulary: int, text_dim: int, p: SequenceSettings) -> None:
        super().__init__()
        self.p = p
        self.ids = nn.Embedding(vocabulary + 1, p.dim, padding_idx=0)  # row 0: unknown item
        nn.init.normal_(self.ids.weight, std=0.05)
        with torch.no_grad():
            self.ids.weight[0].zero_()
        self.text = nn.Linear(text_dim, p.dim, bias=False) if p.text else None
        self.positions = nn.Embedding(p.max_len, p.dim)
        # On the items' scale: the default N(0, 1) would drown what the items say.
        nn.init.normal_(self.positions.weight, std=0.05)
        self.blocks = nn.ModuleList(Block(p.dim, p.heads, p.dropout) for _ in range(p.blocks))
        self.norm = nn.LayerNorm(p.dim)
        self.drop = nn.Dropout(p.dropout)

    def catalogue(self, rows: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """``(n_items, dim)`` item representations: id embedding (``rows`` into the
        vocabulary, 0 = unknown) plus the projected text vector."""
        table = self.ids(rows)
        return table + self.text(text) if self.text is not None else table

    def forward(self, items: torch.Tensor, days: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """``(B, L)`` item columns + 1 and times in days, the ``(n_items, dim)`` catalogue
        -> ``(B, L, dim)`` states; position ``t`` has seen events ``<= t``."""
        length = items.shape[1]
        padded = torch.cat([table.new_zeros(1, table.shape[1]), table])
        x = self.drop(padded[items] + self.positions.weight[-length:])
        real = items > 0
        causal = torch.ones(length, length, dtype=torch.bool).tril()
        # Every position may attend to itself, so that a padding query never sees only -inf.
        mask = (causal & real[:, None, :]) | torch.eye(length, dtype=torch.bool)
        log_gap = torch.log1p((days[:, :, None] - days[:, None, :]).abs()) if self.p.time_decay else None
        for block in self.blocks:
            x = block(x, mask, log_gap)
        return self.norm(x)


@dataclass
class SequenceModel(Recommender):
    """Next-item scores from the user's recent sequence; see the module docstring."""

    name: ClassVar[str] = "sequence"
    kind: ClassVar[str] = "sequence"  # models.servable
    needs_vectors: ClassVar[bool] = True

    item_vectors: object = None  # models.lm_score.ItemVectors
    params: SequenceSettings = field(default_factory=SequenceSettings)

    def _fit(self, data: Interactions) -> None:
        self.train(data)

    def train(self, data: Interactions, monitor: Callable[["SequenceModel"], float] | None = None) -> list[float]:
        """Learn from ``data``. With ``monitor`` (a validation score of the model as it
        stands, higher is better) keep the best epoch and stop after ``patience`` epochs
        without improvement. Returns the monitor's score per epoch."""
        p = self.params
        torch.manual_seed(p.seed)
        rng = np.random.default_rng(p.seed)
        self.vocabulary_ = data.item_ids
        dim = self.item_vectors.vectors.shape[1] if self.item_vectors is not None else 1
        self.net_ = SequenceNet(len(data.item_ids), dim, p)
        self.bind(data)
        items, days = sequences(data, p.max_len + 1)
        lengths = (items > 0).sum(axis=1)
        users = np.flatnonzero(lengths >= 2)  # something to predict
        if not len(users):
            raise ValueError("no user has two events: nothing to learn")
        # Batches of users of similar length, cut to their longest: far less padding.
        users = users[np.argsort(lengths[users], kind="stable")]
        batches = [users[i : i + p.batch_size] for i in range(0, len(users), p.batch_size)]
        inputs, in_days = torch.from_numpy(items[:, :-1]), torch.from_numpy(days[:, :-1])
        targets = torch.from_numpy(items[:, 1:] - 1)  # -1: padding
        optimiser = torch.optim.Adam(self.net_.parameters(), lr=p.lr, weight_decay=p.weight_decay)
        stopping = EarlyStopping(self.net_, p.patience)
        sampled = 0 < p.negatives < data.n_items
        started, seen = time.perf_counter(), 0
        over_budget = lambda: p.timeout_s is not None and time.perf_counter() - started > p.timeout_s  # noqa: E731
        for epoch in range(p.epochs):
            self.net_.train()
            for b in rng.permutation(len(batches)):
                batch = torch.from_numpy(batches[b])
                width = int(lengths[batches[b]].max()) - 1
                x, x_days, target = inputs[batch, -width:], in_days[batch, -width:], targets[batch, -width:]
                real = target >= 0  # logits only where there is a next item
                if sampled:
                    loss = self._sampled_loss(x, x_days, target, torch.from_numpy(rng.integers(0, data.n_items, p.negatives)))
                else:  # the catalogue-wide softmax is the cost
                    table = self.net_.catalogue(self.rows_, self.text_)
                    loss = F.cross_entropy(self.net_(x, x_days, table)[real] @ table.T, target[real])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                seen += int(real.sum())
                if over_budget():  # mid-epoch too: one epoch over a large shop's users can outlast the budget
                    break
            elapsed = time.perf_counter() - started
            if monitor is not None:
                self.net_.eval()  # no dropout while scoring
                score = monitor(self)
                log.info("  sequence epoch %d: loss %.4f, validation %.4f (%.0fs)", epoch + 1, loss.item(), score, elapsed)
                if stopping.update(score):
                    break
            else:
                log.info("  sequence epoch %d: loss %.4f (%.0fs)", epoch + 1, loss.item(), elapsed)
            if over_budget():
                log.info("  sequence: time budget of %.0fs spent after %d epoch(s)", p.timeout_s, epoch + 1)
                break
        stopping.restore()
        elapsed = time.perf_counter() - started
        self.stats_ = {"train_s": round(elapsed, 2), "epochs": epoch + 1, "targets": seen,
                       "targets_per_s": round(seen / max(elapsed, 1e-9)), "users": int(len(users))}
        self.net_.eval()
        return stopping.curve

    def _sampled_loss(self, x: torch.Tensor, days: torch.Tensor, target: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of each next item against ``negatives`` (catalogue columns), embedding
        only the items the batch reads or scores. A negative that is the position's own next
        item is left out of that position's softmax."""
        real = target >= 0
        truth = target[real]
        needed = torch.unique(torch.cat([x[x > 0] - 1, truth, negatives]))
        table = self.net_.catalogue(self.rows_[needed], self.text_[needed])
        local = torch.where(x > 0, torch.searchsorted(needed, (x - 1).clamp(min=0)) + 1, 0)
        states = self.net_(local, days, table)[real]
        positive = (states * table[torch.searchsorted(needed, truth)]).sum(-1, keepdim=True)
        drawn = (states @ table[torch.searchsorted(needed, negatives)].T).masked_fill(negatives[None, :] == truth[:, None], float("-inf"))
        logits = torch.cat([positive, drawn], dim=1)
        return F.cross_entropy(logits, torch.zeros(len(truth), dtype=torch.long))

    def bind(self, data: Interactions) -> "SequenceModel":
        """Score for the users and items of ``data`` (the model stays as trained): items
        outside the training vocabulary are known by their text alone."""
        self.data_ = data
        self.n_users_, self.n_items_ = data.n_users, data.n_items
        pos = np.searchsorted(self.vocabulary_, data.item_ids)
        pos = np.clip(pos, 0, max(len(self.vocabulary_) - 1, 0))
        known = self.vocabulary_[pos] == data.item_ids
        self.rows_ = torch.from_numpy(np.where(known, pos + 1, 0))
        vectors = (self.item_vectors.aligned(data.item_ids) if self.item_vectors is not None
                   else np.zeros((data.n_items, 1), dtype=np.float32))
        self.text_ = torch.from_numpy(vectors)
        self.items_, self.days_ = sequences(data, self.params.max_len)
        return self

    def _score_batch(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), self.n_items_), dtype=np.float32)
        with torch.no_grad():
            table = self.net_.catalogue(self.rows_, self.text_)
            # Small chunks cut to their longest history: attention is (chunk, heads, L, L).
            for start in range(0, len(rows), self.params.batch_size):
                chunk = rows[start : start + self.params.batch_size]
                items = self.items_[chunk]
                width = max(int((items > 0).sum(axis=1).max()), 1)
                states = self.net_(torch.from_numpy(items[:, -width:]), torch.from_numpy(self.days_[chunk, -width:]), table)
                out[start : start + len(chunk)] = (states[:, -1] @ table.T).numpy()
        return out

    def to_files(self, extra: dict) -> dict[str, bytes]:
        """Stored files: safetensors weights (the id vocabulary included) and a JSON config."""
        from safetensors.torch import save

        # safetensors holds numbers only: string ids go into the config.
        numbered = kind_of(self.vocabulary_) == "int"
        tensors = {**self.net_.state_dict(), **({"vocabulary": torch.from_numpy(self.vocabulary_.astype(np.int64))} if numbered else {})}
        config = {**({} if numbered else {"vocabulary": self.vocabulary_.tolist()}), "kind": self.kind, "params": self.params.model_dump(), "text_dim": self.net_.text.in_features
                  if self.net_.text is not None else 1, **extra}
        return {"weights.safetensors": save(tensors), "config.json": json.dumps(config, indent=1).encode()}

    @classmethod
    def from_files(cls, weights: bytes, config: bytes, item_vectors) -> tuple["SequenceModel", dict]:
        """A model from its stored files (safetensors: no code runs while loading); ``bind``
        it to data before scoring."""
        from safetensors.torch import load

        cfg = json.loads(config)
        tensors = load(weights)
        model = cls(item_vectors=item_vectors, params=SequenceSettings(**cfg["params"]))
        model.vocabulary_ = tensors.pop("vocabulary").numpy() if "vocabulary" in tensors else np.asarray(cfg.pop("vocabulary"), dtype=str)
        model.net_ = SequenceNet(len(model.vocabulary_), cfg["text_dim"], model.params)
        model.net_.load_state_dict(tensors)
        model.net_.eval()
        return model, cfg
