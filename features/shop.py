"""A seeded shop log, as a shop would export it: string ids, view -> cart -> purchase funnels
in sessions, a year of seasons, trends and rebuys.

What it plants, so that decay has something real to find:
- each customer's interest moves from one category to another during the year;
- categories have seasons (each its own peak month), and some products trend for a few weeks;
- consumables are bought again about every ``rebuy_days``: a shop's rebuys;
- a share of the catalogue arrives late with text only (no events): cold items;
- timestamps are ISO 8601 with the customer's UTC offset.

``write`` puts ``events.csv`` (customer,sku,event,qty,ts) and ``products.csv``
(sku,name,category,description) in a folder; ``TABULAR`` maps them onto the canonical tables.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from features.adapters import Ingested
    from flows.config import ShopSettings, TabularConfig

CATEGORIES = ("tea", "coffee", "cups", "kettles", "snacks", "gifts", "books", "garden")
ADJECTIVES = ("smoky", "bright", "gentle", "bold", "classic", "rare", "everyday", "festive", "light", "dark")
NOUNS = {"tea": "leaf tea", "coffee": "roast", "cups": "mug", "kettles": "kettle", "snacks": "biscuits",
         "gifts": "gift box", "books": "guide", "garden": "herb kit"}
CONSUMABLE = {"tea", "coffee", "snacks"}
# How the export names its columns (data.tabular's mapping for these files).
TABULAR = {
    "ids": {"user_id": "str", "item_id": "str"},
    "timestamp_format": "iso",
    "event_columns": {"user_id": "customer", "item_id": "sku", "event_type": "event", "value": "qty", "timestamp": "ts"},
    "item_columns": {"item_id": "sku", "title": "name", "categories": "category", "text": "description"},
}


def products(cfg: ShopSettings, rng: np.random.Generator) -> pd.DataFrame:
    category = rng.choice(len(CATEGORIES), cfg.products)
    rows = []
    for n, c in enumerate(category, 1):
        kind = CATEGORIES[c]
        adjective = ADJECTIVES[rng.integers(len(ADJECTIVES))]
        rows.append({"sku": f"SKU-{n:05d}-{'ABCDEFGH'[c]}", "name": f"{adjective.title()} {NOUNS[kind]} no. {n}",
                     "category": kind, "description": f"A {adjective} {NOUNS[kind]} from our {kind} range."
                     + (" Runs out: buy again." if kind in CONSUMABLE else "")})
    return pd.DataFrame(rows)


def events(cfg: ShopSettings, catalogue: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    n_cat = len(CATEGORIES)
    sold = catalogue.iloc[: int(len(catalogue) * (1 - cfg.new_share))]  # the rest arrive unseen
    cat_of = sold["category"].map({c: i for i, c in enumerate(CATEGORIES)}).to_numpy()
    appeal = rng.pareto(1.5, len(sold)) + 1.0  # a few products sell most
    trend_start = np.where(rng.random(len(sold)) < cfg.trending_share, rng.uniform(0, cfg.days - 21, len(sold)), np.nan)
    peak = rng.uniform(0, cfg.days, n_cat)  # each category's season
    rows = []

    def pick(category: int, day: float) -> int:
        members = np.flatnonzero(cat_of == category)
        boost = np.where(np.abs(day - trend_start[members] - 10) < 10, 8.0, 1.0)
        weight = appeal[members] * boost
        return int(members[rng.choice(len(members), p=weight / weight.sum())])

    for customer in range(1, cfg.customers + 1):
        first, later = rng.choice(n_cat, 2, replace=False)
        switch = rng.uniform(0.3, 0.8) * cfg.days
        offset = int(rng.choice([0, 1, 2, -5]))  # hours from UTC
        rebuys: list[tuple[float, int]] = []
        days = np.sort(rng.uniform(0, cfg.days, max(1, rng.poisson(cfg.sessions_per_customer))))
        for day in days:
            while rebuys and rebuys[0][0] <= day:  # a consumable ran out: bought again
                due, item = rebuys.pop(0)
                rows.append((customer, item, "purchase", int(rng.integers(1, 4)), due, offset))
            season = 1 + np.cos(2 * np.pi * (day - peak) / cfg.days)  # 0..2 over the year
            interest = np.full(n_cat, 0.3) * season
            interest[first if day < switch else later] += 6.0
            category = int(rng.choice(n_cat, p=interest / interest.sum()))
            seen = [pick(category, day) for _ in range(max(1, rng.poisson(cfg.views_per_session)))]
            moment = day
            for item in seen:
                rows.append((customer, item, "view", 1, moment, offset))
                moment += rng.uniform(20, 300) / 86_400
            if rng.random() < cfg.cart_rate:
                rows.append((customer, seen[-1], "add_to_cart", 1, moment, offset))
                if rng.random() < cfg.buy_rate:
                    moment += rng.uniform(30, 600) / 86_400
                    rows.append((customer, seen[-1], "purchase", int(rng.integers(1, 4)), moment, offset))
                    if CATEGORIES[cat_of[seen[-1]]] in CONSUMABLE:
                        rebuys.append((moment + rng.normal(cfg.rebuy_days, cfg.rebuy_days / 5), seen[-1]))
                        rebuys.sort()
    frame = pd.DataFrame(rows, columns=["customer", "item", "event", "qty", "day", "offset"])
    frame = frame[frame["day"] < cfg.days].sort_values("day", kind="stable")
    utc = pd.Timestamp(cfg.start) + pd.to_timedelta(np.round(frame["day"].to_numpy() * 86_400), unit="s")
    local = pd.Series(utc + pd.to_timedelta(frame["offset"].to_numpy(), unit="h")).dt.strftime("%Y-%m-%dT%H:%M:%S")
    zones = frame["offset"].map(lambda h: f"{'+' if h >= 0 else '-'}{abs(h):02d}:00").to_numpy()
    return pd.DataFrame({"customer": [f"C{c:05d}" for c in frame["customer"]], "sku": sold["sku"].to_numpy()[frame["item"]],
                         "event": frame["event"].to_numpy(), "qty": frame["qty"].to_numpy(), "ts": local.to_numpy() + zones})


def generate(cfg: ShopSettings) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(events, products)`` as a shop exports them; equal settings give equal data."""
    rng = np.random.default_rng(cfg.seed)
    catalogue = products(cfg, rng)
    return events(cfg, catalogue, rng), catalogue


def write(folder: Path, cfg: ShopSettings) -> dict[str, Path]:
    """The export's two files in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    log, catalogue = generate(cfg)
    paths = {"events": folder / "events.csv", "items": folder / "products.csv"}
    log.to_csv(paths["events"], index=False)
    catalogue.to_csv(paths["items"], index=False)
    return paths


def ingest(cfg: ShopSettings, tabular: TabularConfig) -> Ingested:
    """The shop's export, generated into a scratch folder and read back as any shop's own
    files are (``data.tabular``'s reader, with this export's column mapping)."""
    from features.adapters import load_tabular

    with tempfile.TemporaryDirectory(prefix="decayrec-shop-") as tmp:
        files = write(Path(tmp), cfg)
        return load_tabular(tabular.model_copy(update={**TABULAR, "ids": tabular.ids.model_copy(update=TABULAR["ids"]),
                                                       **files}))
