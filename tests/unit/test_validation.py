"""The one payload check the worker and the CLI share: its codes and words, and strings that
PostgreSQL could not store refused as invalid input before they reach the database."""

from __future__ import annotations

from typing import Any

import pytest

from jobs.errors import InvalidPayloadError
from jobs.models import ComputeBatchTotalsPayload, PlaceOrderPayload
from jobs.validation import field_path, validated


def order(**changes: Any) -> dict[str, Any]:
    return {"customer_id": 1, "items": [{"item_id": 1, "quantity": 1}], **changes}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            order(items=[{"item_id": 1, "quantity": 1}, {"item_id": 2, "quantity": 0}]),
            "items[1].quantity: Input should be greater than or equal to 1",
        ),
        (
            order(items=[{"item_id": 3, "quantity": 1}, {"item_id": 3, "quantity": 2}]),
            "duplicate item ids: 3",
        ),
        (
            order(idempotency_key="checkout\x00-42"),
            "idempotency_key: must not contain a NUL character (PostgreSQL cannot store it)",
        ),
        (order(customer_id="1"), "customer_id: Input should be a valid integer"),
    ],
)
def test_a_bad_payload_is_invalid_payload_naming_the_field(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidPayloadError) as refused:
        validated(PlaceOrderPayload, kwargs)
    assert refused.value.to_document() == {"code": "invalid_payload", "message": message}


def test_a_batch_id_must_be_storable_too() -> None:
    with pytest.raises(InvalidPayloadError, match=r"^batch_id: must not contain a NUL"):
        validated(ComputeBatchTotalsPayload, {"order_ids": [1], "batch_id": "b\x00"})


def test_a_good_payload_comes_back_as_its_model() -> None:
    payload = validated(PlaceOrderPayload, order(idempotency_key="checkout-42"))
    assert payload.idempotency_key == "checkout-42"


@pytest.mark.parametrize(
    ("location", "path"),
    [((), ""), (("items",), "items"), (("items", 0, "quantity"), "items[0].quantity")],
)
def test_field_paths_read_as_people_write_them(location: tuple[int | str, ...], path: str) -> None:
    assert field_path(location) == path
