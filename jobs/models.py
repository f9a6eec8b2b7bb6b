"""Payloads and results of the public jobs. Money is Decimal, and a two-decimal string in JSON."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictInt,
    model_validator,
)

MAX_ORDER_LINES = 1000
MAX_BATCH_IDS = 100_000
INT4_MAX = 2_147_483_647

Money = Annotated[Decimal, PlainSerializer(lambda value: f"{value:.2f}", return_type=str)]
DatabaseId = Annotated[StrictInt, Field(ge=1, le=2**63 - 1)]


def storable(text: str) -> str:
    """Refuse what a PostgreSQL text column cannot hold, before it reaches the database."""
    if "\x00" in text:
        raise ValueError("must not contain a NUL character (PostgreSQL cannot store it)")
    return text  # pydantic's str already refuses lone surrogates, which PostgreSQL cannot store


# A key or id kept in a text column: 1 to 200 characters that PostgreSQL can store.
StoredKey = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(storable)]


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OrderLineIn(Payload):
    item_id: Annotated[StrictInt, Field(ge=1, le=INT4_MAX)]
    quantity: Annotated[StrictInt, Field(ge=1, le=INT4_MAX)]


class PlaceOrderPayload(Payload):
    customer_id: Annotated[StrictInt, Field(ge=1, le=INT4_MAX)]
    items: Annotated[list[OrderLineIn], Field(min_length=1, max_length=MAX_ORDER_LINES)]
    idempotency_key: StoredKey | None = None

    @model_validator(mode="after")
    def _distinct_items(self) -> PlaceOrderPayload:
        counts = Counter(line.item_id for line in self.items)
        repeated = sorted(item_id for item_id, count in counts.items() if count > 1)
        if repeated:
            raise ValueError(f"duplicate item ids: {', '.join(map(str, repeated))}")
        return self


class ComputeOrderTotalPayload(Payload):
    order_id: DatabaseId


class ComputeBatchTotalsPayload(Payload):
    order_ids: Annotated[list[DatabaseId], Field(max_length=MAX_BATCH_IDS)]
    batch_id: StoredKey | None = None


class OrderTotalResult(BaseModel):
    order_id: int
    total: Money


class BatchTotalsResult(BaseModel):
    batch_id: str
    computed: int
    missing: list[int]
    total_sum: Money
