"""Why an item for a user (/explain), and the items like an item (/similar), from the
engine's state: decayed interest topics, the recent items behind a recommendation with
their decay weights and similarities, the model's score and rank; text and item-CF
neighbours. When the online store cannot be read, /explain says what memory alone can
(topics from the events in memory, no model score) and sets ``degraded``."""
from __future__ import annotations

import logging

import numpy as np

from features.decay import SECONDS_PER_DAY
from features.lm_profile import unit_profiles
from models.baselines import decay
from models.lm_score import neighbours, normalise
from serving.engine import Engine, UnknownItem
from serving.reasons import REASONS
from serving.ranking import stored_shares

log = logging.getLogger(__name__)

# A topic is "fading" when its decayed share of interest is this much (relative) below its
# share over all the user's events.
FADING_DROP = 0.25


def explain(engine: Engine, user_id, item_id, top: int = 5) -> dict:
    """Why ``item_id`` for ``user_id``: decayed interest topics (lately and fading), the
    recent items behind it with their decay weights and similarities, and the scores."""
    if item_id not in engine.known_items:
        raise UnknownItem(["body", "item_id"], item_id)
    column = int(engine.columns([item_id])[0])
    degraded = not engine.catch_up()
    now = engine.now
    hist = engine.history(user_id)
    if hist is None:
        return {"user_id": user_id, "item_id": item_id, "title": engine.titles.get(item_id, ""), "fallback": True,
                "degraded": degraded, "topics": {"lately": [], "fading": []}, "recent": [], "reason": REASONS["pop"]}
    try:
        stored = engine.online_user(user_id)
    except Exception as error:  # noqa: BLE001 - a store outage: what memory alone can tell
        log.warning("online store unreadable (%s): /explain from memory for user %s", error, user_id)
        stored, degraded = None, True
    half_life = engine.feature_params.user_half_life_days
    weights = decay((now - hist.seconds) / SECONDS_PER_DAY, half_life)
    counts = engine.item_share[hist.items].sum(axis=0)
    overall = counts / max(float(counts.sum()), 1e-12)
    if stored is not None:
        decayed_share = stored_shares(stored, len(engine.categories))[0]
    else:  # the same decayed shares, from the events in memory
        mixed = (engine.item_share[hist.items] * weights[:, None]).sum(axis=0)
        decayed_share = mixed / max(float(mixed.sum()), 1e-12)
    lately = np.argsort(-decayed_share, kind="stable")[:3]
    fading = [c for c in np.argsort(decayed_share - overall, kind="stable")
              if decayed_share[c] < (1.0 - FADING_DROP) * overall[c]][:3]
    order = np.argsort(-hist.seconds, kind="stable")
    recent, listed = [], set()
    for e in order:
        col = int(hist.items[e])
        if col in listed:
            continue
        listed.add(col)
        item = engine.item_keys[col]
        entry = {"item_id": item, "title": engine.titles.get(item, ""), "decay_weight": float(f"{weights[e]:.4g}"),
                 "days_ago": round(float((now - hist.seconds[e]) / SECONDS_PER_DAY), 1)}
        if column >= 0:
            entry["cf_similarity"] = round(float(engine.why.cf_links(np.array([col]), np.array([column], np.int64))[0, 0]), 4)
            entry["lm_similarity"] = round(float(engine.unit_vectors[col] @ engine.unit_vectors[column]), 4)
        recent.append(entry)
        if len(recent) == top:
            break
    vector = item_vector(engine, item_id)
    lm_score = None
    if stored is not None and vector is not None:
        lm_score = round(float(unit_profiles(stored, engine.vectors.vectors.shape[1])[0] @ vector), 4)
    out = {
        "user_id": user_id, "item_id": item_id, "title": engine.titles.get(item_id, ""),
        "fallback": False, "degraded": degraded,
        "topics": {
            "lately": [{"topic": engine.categories[c], "weight": round(float(decayed_share[c]), 4)} for c in lately],
            "fading": [{"topic": engine.categories[c], "weight": round(float(decayed_share[c]), 4),
                        "overall": round(float(overall[c]), 4)} for c in fading],
        },
        "recent": recent,
        "lm_score": lm_score,
        "half_life_days": half_life,
    }
    if stored is None:
        out.update(model_score=None, rank=None, source=None, reason="the online store is unreadable: no model score")
    else:
        out.update(engine.ranker.explain(hist, stored, now, column))
    return out

def item_vector(engine: Engine, item_id) -> np.ndarray | None:
    """The item's unit LM vector; None for an item without text."""
    pos = int(np.searchsorted(engine.vectors.item_ids, item_id))
    if pos < len(engine.vectors.item_ids) and engine.vectors.item_ids[pos] == item_id:
        return normalise(engine.vectors.vectors[pos : pos + 1])[0]
    return None

def similar(engine: Engine, item_id, k: int) -> dict:
    """Text (LM) neighbours, which cold items have too, and item-CF neighbours."""
    if item_id not in engine.known_items:
        raise UnknownItem(["body", "item_id"], item_id)
    entry = lambda i, s: {"item_id": i, "title": engine.titles.get(i, ""), "similarity": round(float(s), 4)}  # noqa: E731
    lm = [entry(i, s) for i, s in neighbours(engine.vectors, item_id, k)] if item_vector(engine, item_id) is not None else []
    column = int(engine.columns([item_id])[0])
    cf = []
    if column >= 0:
        # The items most similar to this one: its column, as the similarity is symmetric
        # before each item keeps its top k.
        sim = engine.why.similar_to
        start, end = sim.indptr[column], sim.indptr[column + 1]
        cols, values = sim.indices[start:end], sim.data[start:end]
        keep = cols != column
        cols, values = cols[keep], values[keep]
        order = np.lexsort((cols, -values))[:k]
        cf = [entry(engine.item_keys[c], v) for c, v in zip(cols[order], values[order]) if v > 0]
    return {"item_id": item_id, "title": engine.titles.get(item_id, ""),
            "degraded": False, "lm": lm, "cf": cf}  # from memory alone: neither the store nor the log is read
