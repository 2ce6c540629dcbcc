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
from collections.abc import Iterator
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


# Trending products sell BOOST times their appeal while 0 < day - trend_start < TREND_DAYS.
TREND_DAYS, BOOST = 20.0, 8.0
OFFSETS = np.array([0, 1, 2, -5])  # a customer's hours from UTC
ZONES = np.array([f"{'+' if h >= 0 else '-'}{abs(h):02d}:00" for h in OFFSETS])
KINDS = np.array(["view", "add_to_cart", "purchase"], dtype=object)
VIEW, CART, PURCHASE = range(3)
# Customers are generated this many at a time: memory stays bounded whatever the size. A
# constant, so that equal settings give equal data on any machine.
CUSTOMERS_AT_ONCE = 25_000
ROWS_AT_ONCE = 1_000_000  # rows formatted at a time (fixed-width text is 4 bytes a character)


def products(cfg: ShopSettings, rng: np.random.Generator) -> pd.DataFrame:
    category = rng.choice(len(CATEGORIES), cfg.products)
    adjective = rng.integers(len(ADJECTIVES), size=cfg.products)
    kinds = [CATEGORIES[c] for c in category]
    return pd.DataFrame({
        "sku": [f"SKU-{n:05d}-{'ABCDEFGH'[c]}" for n, c in enumerate(category, 1)],
        "name": [f"{ADJECTIVES[a].title()} {NOUNS[k]} no. {n}" for n, (a, k) in enumerate(zip(adjective, kinds), 1)],
        "category": kinds,
        "description": [f"A {ADJECTIVES[a]} {NOUNS[k]} from our {k} range." + (" Runs out: buy again." if k in CONSUMABLE else "")
                        for a, k in zip(adjective, kinds)],
    })


class Picker:
    """Draws products of given categories on given days, each with weight appeal, times BOOST
    while it trends, in O(log items) a draw (the catalogue is scanned once, not per draw).

    A category's weight is its base pool (every product at its appeal) plus (BOOST - 1) times
    the appeal of its products trending that day. Sorted by category and trend start, the
    products trending on a day are one contiguous run, so both pools are slices of cumulative
    appeal and a single uniform draw lands in one of them by searchsorted."""

    def __init__(self, category: np.ndarray, appeal: np.ndarray, trend_start: np.ndarray, days: float) -> None:
        self.order = np.argsort(category, kind="stable")
        self.cum = np.concatenate([[0.0], np.cumsum(appeal[self.order])])
        self.bounds = np.searchsorted(category[self.order], np.arange(len(CATEGORIES) + 1))
        self.stocked = np.diff(self.bounds) > 0
        trending = np.flatnonzero(~np.isnan(trend_start))
        # One sorted key for (category, trend start); a category's keys and the days asked of
        # it lie within [c * span - TREND_DAYS, c * span + days), apart from the next one's.
        self.span = days + TREND_DAYS
        key = category[trending] * self.span + trend_start[trending]
        by_key = np.argsort(key, kind="stable")
        self.trend_order, self.trend_key = trending[by_key], key[by_key]
        self.trend_cum = np.concatenate([[0.0], np.cumsum(appeal[self.trend_order])])

    def __call__(self, category: np.ndarray, day: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        first, end = self.bounds[category], self.bounds[category + 1]
        base = self.cum[end] - self.cum[first]
        key = category * self.span + day
        lo = np.searchsorted(self.trend_key, key - TREND_DAYS, side="right")  # trend_start > day - TREND_DAYS
        hi = np.searchsorted(self.trend_key, key, side="left")  # trend_start < day
        u = rng.random(len(category)) * (base + (BOOST - 1) * (self.trend_cum[hi] - self.trend_cum[lo]))
        boosted = u >= base
        item = np.empty(len(category), dtype=np.int64)
        item[~boosted] = slot(self.cum, self.order, first[~boosted], end[~boosted], u[~boosted])
        item[boosted] = slot(self.trend_cum, self.trend_order, lo[boosted], hi[boosted],
                             (u[boosted] - base[boosted]) / (BOOST - 1))
        return item


def slot(cum: np.ndarray, order: np.ndarray, start: np.ndarray, end: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The entry of ``order`` whose slice of ``cum`` holds ``cum[start] + u``, kept within
    ``[start, end)`` where float rounding would step into a neighbour."""
    return order[np.clip(np.searchsorted(cum, cum[start] + u, side="right") - 1, start, end - 1)]


def choose_rows(weight: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One column per row of ``weight``, drawn in proportion to that row's weights."""
    cum = np.cumsum(weight, axis=1)
    u = rng.random(len(weight)) * cum[:, -1]
    return np.minimum((cum <= u[:, None]).sum(axis=1), weight.shape[1] - 1)


def sessions(cfg: ShopSettings, customers: int, peak: np.ndarray, stocked: np.ndarray,
             rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """``(owner, day, category)`` of each session of ``customers`` customers, by owner then day.
    A customer's interest sits on one category until their switch point, then on another;
    under it every category rises and falls with its season. Only ``stocked`` categories are
    browsed (a small catalogue may lack one)."""
    n_cat = len(CATEGORIES)
    first = rng.integers(n_cat, size=customers)
    later = (first + rng.integers(1, n_cat, size=customers)) % n_cat  # any other category
    switch = rng.uniform(0.3, 0.8, customers) * cfg.days
    owner = np.repeat(np.arange(customers), np.maximum(1, rng.poisson(cfg.sessions_per_customer, customers)))
    day = rng.uniform(0, cfg.days, len(owner))
    day = day[np.lexsort((day, owner))]  # owner is sorted already: this sorts each one's days
    season = 1 + np.cos(2 * np.pi * (day[:, None] - peak) / cfg.days)  # 0..2 over the year
    interest = 0.3 * season
    interest[np.arange(len(day)), np.where(day < switch[owner], first[owner], later[owner])] += 6.0
    return owner, day, choose_rows(interest * stocked, rng)


def kind_of(owner: np.ndarray, item: np.ndarray, kind: int, day: np.ndarray,
            qty: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """Columns ``(owner, item, kind, qty, day)`` of events of one kind; qty 1 unless given."""
    return owner, item, np.full(len(item), kind), np.ones(len(item), dtype=np.int64) if qty is None else qty, day


def shoppers(cfg: ShopSettings, customers: int, peak: np.ndarray, picker: Picker, consumable: np.ndarray,
             rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """``(owner, item, kind, qty, day)`` of every event of ``customers`` customers: each
    session's Poisson views, its last view put in the cart and bought at the funnel's rates,
    and each bought consumable bought again about ``rebuy_days`` later."""
    owner, day, category = sessions(cfg, customers, peak, picker.stocked, rng)
    views = np.maximum(1, rng.poisson(cfg.views_per_session, len(day)))
    session = np.repeat(np.arange(len(day)), views)
    opening = np.cumsum(views) - views  # each session's first view
    last = opening + views - 1
    item = picker(category[session], day[session], rng)
    # Each view comes 20 s to 5 min after the one before; the cart one more such gap after the last.
    gap = rng.uniform(20, 300, len(session)) / 86_400
    after = np.cumsum(gap)
    after -= (after - gap)[opening][session]  # from the session's start to the end of each view's gap
    log = [kind_of(owner[session], item, VIEW, day[session] + after - gap)]

    carted = np.flatnonzero(rng.random(len(day)) < cfg.cart_rate)
    cart_item, cart_day = item[last[carted]], day[carted] + after[last[carted]]
    log.append(kind_of(owner[carted], cart_item, CART, cart_day))
    bought = np.flatnonzero(rng.random(len(carted)) < cfg.buy_rate)
    buyer, bought_item = owner[carted[bought]], cart_item[bought]
    buy_day = cart_day[bought] + rng.uniform(30, 600, len(bought)) / 86_400
    log.append(kind_of(buyer, bought_item, PURCHASE, buy_day, rng.integers(1, 4, len(bought))))
    last_visit = day[np.searchsorted(owner, np.arange(customers), side="right") - 1]  # every customer has a session
    log.append(rebuys(cfg, buyer, bought_item, buy_day, last_visit, consumable, rng))
    return tuple(np.concatenate(column) for column in zip(*log))


def rebuys(cfg: ShopSettings, owner: np.ndarray, item: np.ndarray, day: np.ndarray, last_visit: np.ndarray,
           consumable: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Purchases ``(owner, item, day)`` of consumables run out and are bought once more about
    ``rebuy_days`` later (normal, sd a fifth of it): logged if the customer has come back (has a
    session) by then, as the shop only sees a rebuy on a later visit."""
    runs_out = consumable[item]
    owner, item = owner[runs_out], item[runs_out]
    due = day[runs_out] + rng.normal(cfg.rebuy_days, cfg.rebuy_days / 5, runs_out.sum())
    kept = due <= last_visit[owner]
    return kind_of(owner[kept], item[kept], PURCHASE, due[kept], rng.integers(1, 4, kept.sum()))


def timestamps(day: np.ndarray, zone: np.ndarray, start: str) -> np.ndarray:
    """ISO 8601 local times with their UTC offsets, ``day`` counting days from ``start`` (UTC)
    and ``zone`` indexing OFFSETS."""
    local = np.datetime64(start, "s") + (np.round(day * 86_400).astype(np.int64) + OFFSETS[zone] * 3600)
    return np.strings.add(np.datetime_as_string(local, unit="s"), ZONES[zone]).astype(object)


def draw(cfg: ShopSettings, catalogue: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """The log as numbers, in time order: customer (from 0), item (a row of ``catalogue``),
    kind (into KINDS), qty, day (days since ``cfg.start``, UTC) and zone (into OFFSETS)."""
    n_cat = len(CATEGORIES)
    sold = catalogue.iloc[: int(len(catalogue) * (1 - cfg.new_share))]  # the rest arrive unseen
    cat_of = sold["category"].map({c: i for i, c in enumerate(CATEGORIES)}).to_numpy()
    appeal = rng.pareto(1.5, len(sold)) + 1.0  # a few products sell most
    trend_start = np.where(rng.random(len(sold)) < cfg.trending_share, rng.uniform(0, cfg.days - 21, len(sold)), np.nan)
    peak = rng.uniform(0, cfg.days, n_cat)  # each category's season
    picker = Picker(cat_of, appeal, trend_start, cfg.days)
    consumable = np.isin(cat_of, [CATEGORIES.index(c) for c in CONSUMABLE])
    zone = rng.integers(len(OFFSETS), size=cfg.customers).astype(np.int8)
    parts = []
    for first in range(0, cfg.customers, CUSTOMERS_AT_ONCE):
        owner, item, kind, qty, day = shoppers(cfg, min(CUSTOMERS_AT_ONCE, cfg.customers - first), peak, picker, consumable, rng)
        owner += first
        part = pd.DataFrame({"customer": owner.astype(np.int32), "item": item.astype(np.int32), "kind": kind.astype(np.int8),
                             "qty": qty.astype(np.int8), "day": day, "zone": zone[owner]})
        parts.append(part[day < cfg.days])  # a purchase or rebuy can fall after the year
    log = pd.concat(parts, ignore_index=True)
    del parts  # at 20M events every copy of the log counts
    return log.sort_values("day", kind="stable", ignore_index=True)


def rows(cfg: ShopSettings, catalogue: pd.DataFrame, rng: np.random.Generator) -> Iterator[pd.DataFrame]:
    """The log as the shop writes it (customer,sku,event,qty,ts), in time order, ROWS_AT_ONCE
    rows at a time: its text takes about 100 bytes a row, so a large log is written in parts."""
    log = draw(cfg, catalogue, rng)
    ids = np.array([f"C{c:05d}" for c in range(1, cfg.customers + 1)], dtype=object)
    skus = catalogue["sku"].to_numpy()
    for at in range(0, len(log), ROWS_AT_ONCE):
        part = log.iloc[at:at + ROWS_AT_ONCE]
        yield pd.DataFrame({"customer": ids[part["customer"]], "sku": skus[part["item"]], "event": KINDS[part["kind"]],
                            "qty": part["qty"].to_numpy(np.int64),
                            "ts": timestamps(part["day"].to_numpy(), part["zone"].to_numpy(), cfg.start)})


def events(cfg: ShopSettings, catalogue: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    return pd.concat(rows(cfg, catalogue, rng), ignore_index=True)


def generate(cfg: ShopSettings) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(events, products)`` as a shop exports them; equal settings give equal data."""
    rng = np.random.default_rng(cfg.seed)
    catalogue = products(cfg, rng)
    return events(cfg, catalogue, rng), catalogue


def write(folder: Path, cfg: ShopSettings) -> dict[str, Path]:
    """The export's two files in ``folder``: ``generate``'s tables, the events written a part
    at a time so that memory stays bounded."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    catalogue = products(cfg, rng)
    paths = {"events": folder / "events.csv", "items": folder / "products.csv"}
    with open(paths["events"], "w", newline="") as out:
        for n, part in enumerate(rows(cfg, catalogue, rng)):
            part.to_csv(out, header=n == 0, index=False)
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
