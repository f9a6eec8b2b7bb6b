"""Payload validation rules and the JSON shape of results (money as two-decimal strings)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from jobs.models import (
    MAX_ORDER_LINES,
    BatchTotalsResult,
    ComputeBatchTotalsPayload,
    ComputeOrderTotalPayload,
    OrderTotalResult,
    PlaceOrderPayload,
)


def order(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "customer_id": 1,
        "items": [{"item_id": 2, "quantity": 4}, {"item_id": 3, "quantity": 2}],
        "idempotency_key": "order-1",
    }
    fields.update(overrides)
    return fields


def line(item_id: int = 1, quantity: Any = 1) -> dict[str, Any]:
    return {"item_id": item_id, "quantity": quantity}


def problems(payload: dict[str, Any]) -> list[tuple[str, str]]:
    """(location, message) of each problem; fails the test if the payload is accepted."""
    with pytest.raises(ValidationError) as caught:
        PlaceOrderPayload.model_validate(payload)
    return [
        (".".join(str(part) for part in error["loc"]), error["msg"])
        for error in caught.value.errors()
    ]


def test_a_valid_order_is_accepted() -> None:
    payload = PlaceOrderPayload.model_validate(order())
    assert payload.customer_id == 1
    assert [(line.item_id, line.quantity) for line in payload.items] == [(2, 4), (3, 2)]
    assert payload.idempotency_key == "order-1"


def test_the_idempotency_key_is_optional() -> None:
    assert PlaceOrderPayload.model_validate(order(idempotency_key=None)).idempotency_key is None
    without = order()
    del without["idempotency_key"]
    assert PlaceOrderPayload.model_validate(without).idempotency_key is None


@pytest.mark.parametrize("value", ["1", 1.0, True, Decimal("1"), None])
def test_customer_id_must_be_a_strict_int(value: Any) -> None:
    assert [where for where, _ in problems(order(customer_id=value))] == ["customer_id"]


@pytest.mark.parametrize("value", ["4", 4.0, True, Decimal("4.0")])
def test_quantity_must_be_a_strict_int(value: Any) -> None:
    assert [where for where, _ in problems(order(items=[line(1, value)]))] == ["items.0.quantity"]


@pytest.mark.parametrize("value", ["2", 2.0, False])
def test_item_id_must_be_a_strict_int(value: Any) -> None:
    assert [where for where, _ in problems(order(items=[line(value)]))] == ["items.0.item_id"]


@pytest.mark.parametrize("quantity", [0, -1])
def test_quantity_is_at_least_one(quantity: int) -> None:
    assert problems(order(items=[line(1, quantity)])) == [
        ("items.0.quantity", "Input should be greater than or equal to 1")
    ]


@pytest.mark.parametrize("field", ["customer_id", "item_id"])
def test_ids_are_positive_and_fit_the_column(field: str) -> None:
    for bad in (0, 2**31):
        payload = order(customer_id=bad) if field == "customer_id" else order(items=[line(bad)])
        assert problems(payload)


def test_an_order_has_at_least_one_line() -> None:
    assert [where for where, _ in problems(order(items=[]))] == ["items"]


def test_an_order_has_at_most_a_thousand_lines() -> None:
    lines = [line(item_id) for item_id in range(1, MAX_ORDER_LINES + 1)]
    assert len(PlaceOrderPayload.model_validate(order(items=lines)).items) == 1000
    too_many = [*lines, line(MAX_ORDER_LINES + 1)]
    assert [where for where, _ in problems(order(items=too_many))] == ["items"]


def test_duplicate_item_ids_are_refused_and_named() -> None:
    found = problems(order(items=[line(3), line(1), line(3), line(2), line(1)]))
    assert len(found) == 1
    assert found[0][1].endswith("duplicate item ids: 1, 3")


def test_extra_fields_are_forbidden_at_every_level() -> None:
    assert problems(order(coupon="FREE")) == [("coupon", "Extra inputs are not permitted")]
    assert problems(order(items=[{"item_id": 1, "quantity": 1, "price": "0.01"}])) == [
        ("items.0.price", "Extra inputs are not permitted")
    ]


@pytest.mark.parametrize("key", ["", "k" * 201])
def test_the_idempotency_key_length_is_bounded(key: str) -> None:
    assert [where for where, _ in problems(order(idempotency_key=key))] == ["idempotency_key"]


def test_a_two_hundred_character_idempotency_key_is_accepted() -> None:
    key = "k" * 200
    assert PlaceOrderPayload.model_validate(order(idempotency_key=key)).idempotency_key == key


def test_payloads_are_frozen() -> None:
    payload = PlaceOrderPayload.model_validate(order())
    with pytest.raises(ValidationError):
        payload.customer_id = 2


def test_compute_order_total_needs_a_positive_strict_id() -> None:
    assert ComputeOrderTotalPayload.model_validate({"order_id": 3}).order_id == 3
    for bad in (0, "3", 3.0, None):
        with pytest.raises(ValidationError):
            ComputeOrderTotalPayload.model_validate({"order_id": bad})


def test_batch_totals_accepts_positive_ids_and_an_optional_batch_id() -> None:
    payload = ComputeBatchTotalsPayload.model_validate({"order_ids": [1, 2, 3]})
    assert payload.order_ids == [1, 2, 3]
    assert payload.batch_id is None
    assert ComputeBatchTotalsPayload.model_validate({"order_ids": [], "batch_id": "b"}).batch_id


@pytest.mark.parametrize("bad", [0, -5, "4", 4.0])
def test_batch_totals_refuses_ids_below_one_or_not_ints(bad: Any) -> None:
    with pytest.raises(ValidationError) as caught:
        ComputeBatchTotalsPayload.model_validate({"order_ids": [1, bad, 3]})
    assert [error["loc"] for error in caught.value.errors()] == [("order_ids", 1)]


def test_batch_totals_refuses_an_empty_batch_id_and_extra_fields() -> None:
    with pytest.raises(ValidationError):
        ComputeBatchTotalsPayload.model_validate({"order_ids": [1], "batch_id": ""})
    with pytest.raises(ValidationError):
        ComputeBatchTotalsPayload.model_validate({"order_ids": [1], "chunk": 1})


@pytest.mark.parametrize(
    ("total", "written"),
    [
        (Decimal("30"), "30.00"),
        (Decimal("30.00"), "30.00"),
        (Decimal("0.01"), "0.01"),
        (Decimal("0"), "0.00"),
        (Decimal("999999999.90"), "999999999.90"),
        (Decimal("12.5"), "12.50"),
    ],
)
def test_order_total_money_is_a_two_decimal_string(total: Decimal, written: str) -> None:
    dumped = OrderTotalResult(order_id=1, total=total).model_dump(mode="json")
    assert dumped == {"order_id": 1, "total": written}
    assert Decimal(dumped["total"]) == total


def test_batch_totals_result_dumps_its_sum_as_a_two_decimal_string() -> None:
    result = BatchTotalsResult(
        batch_id="b1", computed=3, missing=[9], total_sum=Decimal("0.10") + Decimal("0.20")
    )
    assert result.model_dump(mode="json") == {
        "batch_id": "b1",
        "computed": 3,
        "missing": [9],
        "total_sum": "0.30",
    }
    assert result.model_dump_json() == (
        '{"batch_id":"b1","computed":3,"missing":[9],"total_sum":"0.30"}'
    )
