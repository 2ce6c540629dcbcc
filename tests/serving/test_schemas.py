"""The request bodies the service accepts, built from params: ids of the data set's kind,
each event type's own value range, nothing coerced."""
from __future__ import annotations

import pydantic
import pytest

from flows.config import Params
from serving.schemas import request_models

AT = "2025-03-01T12:00:00+01:00"


def shop() -> Params:
    return Params.model_validate({
        "data": {"dataset": "csv", "tabular": {"ids": {"user_id": "str", "item_id": "str"}}},
        "validate": {"value_min": 1.0, "value_max": 5.0, "value_ranges": {"purchase": [1.0, 1000.0]}},
        "features": {"event_weights": {"view": 1.0, "add_to_cart": 2.0, "purchase": 4.0}},
    })


def test_each_event_type_is_held_to_its_own_value_range():
    event = request_models(shop()).event
    assert event.model_validate({"user_id": "C00017", "item_id": "SKU-1", "event_type": "purchase", "value": 600.0,
                                 "timestamp": AT}).value == 600.0
    with pytest.raises(pydantic.ValidationError, match=r"the value of a view event must be in \[1, 5\]"):
        event.model_validate({"user_id": "C00017", "item_id": "SKU-1", "event_type": "view", "value": 600.0, "timestamp": AT})
    with pytest.raises(pydantic.ValidationError, match="less than or equal to 1000"):
        event.model_validate({"user_id": "C00017", "item_id": "SKU-1", "event_type": "purchase", "value": 1e6, "timestamp": AT})


@pytest.mark.parametrize("body", [{"user_id": 17, "k": 3}, {"user_id": "", "k": 3}, {"user_id": "C\n1", "k": 3},
                                  {"user_id": "C" * 129, "k": 3}, {"user_id": "C00017", "exclude": [5]}])
def test_a_string_id_service_takes_printable_bounded_strings_only(body):
    with pytest.raises(pydantic.ValidationError):
        request_models(shop()).recommend.model_validate(body)


def test_an_integer_id_service_takes_no_string_for_a_number():
    recommend = request_models(Params()).recommend
    assert recommend.model_validate({"user_id": 17}).user_id == 17
    with pytest.raises(pydantic.ValidationError):
        recommend.model_validate({"user_id": "17"})
