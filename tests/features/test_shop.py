"""The bundled shop log: seeded, funnel-shaped, seasonal, with rebuys and cold items."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features import shop as shop_module
from features.shop import BOOST, CONSUMABLE, TREND_DAYS, Picker, generate, write
from flows.config import ShopSettings

SMALL = ShopSettings(customers=300, products=120, seed=3)


@pytest.fixture(scope="module")
def shop():
    return generate(SMALL)


def test_equal_settings_give_equal_logs_and_another_seed_another(shop):
    events, products = shop
    again, _ = generate(SMALL)
    pd.testing.assert_frame_equal(events, again)
    other, _ = generate(SMALL.model_copy(update={"seed": 4}))
    assert not events.equals(other)


def test_ids_are_strings_and_times_carry_their_offsets(shop):
    events, products = shop
    assert events["customer"].str.fullmatch(r"C\d{5}").all() and products["sku"].str.fullmatch(r"SKU-\d{5}-[A-H]").all()
    assert events["ts"].str.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:00").all()
    assert events["ts"].str[-6:].nunique() > 1
    stamps = pd.to_datetime(events["ts"], utc=True, format="ISO8601")
    assert stamps.is_monotonic_increasing  # written in time order, whatever the local zone


def test_sessions_run_view_then_cart_then_purchase_and_consumables_are_bought_again(shop):
    events, products = shop
    counts = events["event"].value_counts()
    assert counts["view"] > counts["add_to_cart"] > counts["purchase"] > 0
    carts = set(zip(events.loc[events["event"] == "add_to_cart", "customer"], events.loc[events["event"] == "add_to_cart", "sku"]))
    bought = events[events["event"] == "purchase"]
    kind = bought["sku"].map(products.set_index("sku")["category"])
    # A purchase follows a cart of the same product, or it is a rebuy of a consumable.
    assert all((c, s) in carts for c, s in zip(bought["customer"], bought["sku"]))
    repeats = bought.groupby(["customer", "sku"]).size()
    assert (repeats > 1).sum() > 10
    assert kind[bought.duplicated(["customer", "sku"])].isin(CONSUMABLE).mean() > 0.8  # rebuys: consumables


def test_new_products_have_text_and_no_events_and_categories_have_seasons(shop):
    events, products = shop
    cold = set(products["sku"]) - set(events["sku"])
    assert len(cold) >= int(SMALL.products * SMALL.new_share) and products.set_index("sku").loc[sorted(cold), "description"].str.len().gt(10).all()
    month = pd.to_datetime(events["ts"], utc=True, format="ISO8601").dt.month
    share = pd.crosstab(month, events["sku"].map(products.set_index("sku")["category"]), normalize="index")
    assert (share.max() / share.min()).median() > 1.5  # a category's share moves over the year


def test_rebuys_come_about_rebuy_days_after_the_purchase(shop):
    events, products = shop
    bought = events[events["event"] == "purchase"].assign(day=pd.to_datetime(events["ts"], utc=True, format="ISO8601"))
    gap = bought.groupby(["customer", "sku"])["day"].diff().dropna().dt.total_seconds() / 86_400
    assert abs(gap.median() - SMALL.rebuy_days) < SMALL.rebuy_days / 5


def test_products_are_drawn_by_appeal_and_boosted_while_they_trend():
    rng = np.random.default_rng(0)
    category = rng.integers(8, size=200)
    appeal = rng.pareto(1.5, 200) + 1.0
    trend_start = np.where(rng.random(200) < 0.5, rng.uniform(0, 344, 200), np.nan)
    picker = Picker(category, appeal, trend_start, 365)
    for c in (0, 3, 7):
        members = np.flatnonzero(category == c)
        day = np.nanmin(trend_start[members]) + 5  # one of its products trends, maybe more
        trending = np.abs(day - trend_start[members] - TREND_DAYS / 2) < TREND_DAYS / 2
        weight = appeal[members] * np.where(trending, BOOST, 1.0)
        drawn = picker(np.full(200_000, c), np.full(200_000, day), rng)
        assert np.isin(drawn, members).all()
        share = np.bincount(drawn, minlength=200)[members] / len(drawn)
        assert np.abs(share - weight / weight.sum()).max() < 0.01


def test_a_catalogue_lacking_a_category_still_sells_what_it_has():
    events, products = generate(ShopSettings(customers=50, products=8, seed=1))
    assert products["category"].nunique() < 8 and set(events["sku"]) <= set(products["sku"]) and len(events) > 50


def test_the_written_export_is_the_generated_log_whatever_the_parts(tmp_path, monkeypatch):
    monkeypatch.setattr(shop_module, "ROWS_AT_ONCE", 1_000)  # the log in several parts
    events, products = generate(SMALL)
    files = write(tmp_path, SMALL)
    assert files["events"].read_text() == events.to_csv(index=False)
    pd.testing.assert_frame_equal(pd.read_csv(files["items"]), products)
