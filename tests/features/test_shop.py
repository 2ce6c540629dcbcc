"""The bundled shop log: seeded, funnel-shaped, seasonal, with rebuys and cold items."""
from __future__ import annotations

import pandas as pd
import pytest

from features.shop import CONSUMABLE, generate
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
