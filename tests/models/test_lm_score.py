"""LM profiles, LM score and neighbours with the real bundled MiniLM."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.interactions import Interactions
from models.lm import load_encoder
from models.lm_score import DecayedCFWithLM, ItemVectors, LMScore, neighbours, profiles

TEXTS = {
    1: "Toy Story (1995) Genres: Animation, Children, Comedy. Toys come to life.",
    2: "Aladdin (1992) Genres: Animation, Children, Musical. A street boy finds a magic lamp.",
    3: "Saving Private Ryan (1998) Genres: Action, Drama, War. Soldiers search for a paratrooper in Normandy.",
    4: "Platoon (1986) Genres: Drama, War. An infantry platoon in Vietnam.",
}


@pytest.fixture(scope="module")
def vectors() -> ItemVectors:
    encoder = load_encoder(model="minilm", progress=False)
    ids = np.array(sorted(TEXTS))
    return ItemVectors(ids, encoder.encode([TEXTS[i] for i in ids]))


def interactions(rows: list[tuple[int, int, int]]) -> Interactions:
    return Interactions.from_events(
        pd.DataFrame(
            {
                "user_id": [r[0] for r in rows],
                "item_id": [r[1] for r in rows],
                "event_type": "rating",
                "value": 4.0,
                "timestamp": pd.to_datetime([r[2] * 86_400 for r in rows], unit="s", utc=True).astype("datetime64[us, UTC]"),
            }
        )
    )


def test_lm_score_prefers_items_like_the_recent_ones(vectors):
    # User 1 watched war films long ago and an animation film lately.
    data = interactions([(1, 3, 0), (1, 4, 1), (1, 1, 400), (2, 2, 0)])
    model = LMScore(half_life_days=30, item_vectors=vectors).fit(data)
    scores = model.score(np.array([0]))[0]
    assert scores[1] > scores[3]  # Aladdin (column 1) over Platoon (column 3)
    np.testing.assert_allclose(np.linalg.norm(model.profiles_, axis=1), 1.0, rtol=1e-5)


def test_profile_holds_at_any_later_time_and_long_half_life_remembers(vectors):
    data = interactions([(1, 3, 0), (1, 1, 400)])
    fast = profiles(data, vectors.aligned(data.item_ids), half_life_days=10)[0]
    slow = profiles(data, vectors.aligned(data.item_ids), half_life_days=10_000)[0]
    war = vectors.vectors[2]
    assert slow @ war > fast @ war + 0.2


def test_neighbours_work_for_items_nobody_touched(vectors):
    assert neighbours(vectors, 1, 1)[0][0] == 2
    assert neighbours(vectors, 3, 1)[0][0] == 4
    with pytest.raises(KeyError):
        neighbours(vectors, 99, 1)


def test_combined_scorer_with_lm_moves_the_ranking_only_when_alpha_is_positive(vectors):
    data = interactions([(1, 3, 0), (1, 1, 400), (2, 3, 0), (2, 4, 1), (3, 1, 0), (3, 2, 2)])
    plain = DecayedCFWithLM(k=3, half_life_days=7, alpha=0.0, item_vectors=vectors).fit(data).score(np.arange(3))
    base = DecayedCFWithLM(k=3, half_life_days=7, alpha=0.0, item_vectors=vectors)
    base.fit(data)
    lm = base.lm_.score(np.arange(3))
    mixed = DecayedCFWithLM(k=3, half_life_days=7, alpha=1.0, item_vectors=vectors).fit(data).score(np.arange(3))
    assert not np.allclose(plain, mixed)
    assert np.all(np.isfinite(lm))
