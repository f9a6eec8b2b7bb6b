"""Placing orders: validated in one round trip, written in the caller's single transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, INTEGER
from sqlalchemy.ext.asyncio import AsyncSession

from db.direct import fetch_row
from db.totals import upsert_order_total


class UnknownCustomerError(LookupError):
    def __init__(self, customer_id: int) -> None:
        super().__init__(f"customer {customer_id} does not exist")
        self.customer_id = customer_id


class IdempotencyConflictError(ValueError):
    """A key (or job id) that placed one order, sent again with another customer or other lines."""

    def __init__(self, used_as: str, difference: str) -> None:
        super().__init__(f"{used_as} was first used {difference}; send a new key for a new order")


# Unknown items named in the message: an order has up to 1,000 lines, an error is one line.
NAMED_UNKNOWN_ITEMS = 10


class UnknownItemsError(LookupError):
    def __init__(self, item_ids: Sequence[int]) -> None:
        listed = ", ".join(str(item_id) for item_id in item_ids[:NAMED_UNKNOWN_ITEMS])
        if len(item_ids) > NAMED_UNKNOWN_ITEMS:
            listed += f" and {len(item_ids) - NAMED_UNKNOWN_ITEMS:,} more"
        super().__init__(f"items do not exist: {listed}")
        self.item_ids = list(item_ids)


@dataclass(frozen=True, slots=True)
class OrderLine:
    item_id: int
    quantity: int


@dataclass(frozen=True, slots=True)
class PlacedOrder:
    order_id: int
    total: Decimal
    created: bool


LOOKUP = text(
    """
    WITH existing AS (
        SELECT id, customer_id, idempotency_key FROM orders
        WHERE idempotency_key = :idempotency_key OR job_id = :job_id
        LIMIT 1
    )
    SELECT
        EXISTS (SELECT 1 FROM customer WHERE id = :customer_id) AS customer_exists,
        ARRAY(SELECT id FROM item WHERE id = ANY(:item_ids)) AS known_items,
        existing.id AS existing_order_id,
        existing.customer_id AS existing_customer_id,
        existing.idempotency_key AS existing_key,
        ARRAY(
            SELECT ARRAY[line.item_id, line.quantity] FROM order_items AS line
            WHERE line.order_id = existing.id
        ) AS existing_lines
    FROM (SELECT 1) AS always_one_row LEFT JOIN existing ON true
    """
).bindparams(bindparam("item_ids", type_=ARRAY(INTEGER)))

# A concurrent insert with the same key (or job) waits on the unique index, then does nothing.
INSERT_ORDER = text(
    """
    INSERT INTO orders (customer_id, order_time, idempotency_key, job_id)
    VALUES (:customer_id, now(), :idempotency_key, :job_id)
    ON CONFLICT DO NOTHING
    RETURNING id
    """
)

INSERT_LINES = text(
    """
    INSERT INTO order_items (order_id, item_id, quantity)
    SELECT :order_id, line.item_id, line.quantity
    FROM unnest(CAST(:item_ids AS integer[]), CAST(:quantities AS integer[]))
        AS line(item_id, quantity)
    """
).bindparams(
    bindparam("item_ids", type_=ARRAY(INTEGER)), bindparam("quantities", type_=ARRAY(INTEGER))
)


# A new order whose customer and items exist, in one statement (so one transaction and one round
# trip): the order, its lines and its total, computed from the lines it inserts (a statement's
# parts share one snapshot: they cannot read each other's rows). No row back, and nothing written,
# for anything else: a key or job id used before or at this moment (the unique indexes), an
# unknown customer or item. $1 customer, $2 item ids, $3 quantities, $4 key, $5 job id.
PLACE_NEW_ORDER_DRIVER_SQL = """
    WITH line AS (
        SELECT requested.item_id, requested.quantity, item.price
        FROM unnest($2::integer[], $3::integer[]) AS requested(item_id, quantity)
        JOIN item ON item.id = requested.item_id
    ), placed AS (
        INSERT INTO orders (customer_id, order_time, idempotency_key, job_id)
        SELECT $1, now(), $4, $5
        WHERE EXISTS (SELECT 1 FROM customer WHERE id = $1)
            AND (SELECT count(*) FROM line) = cardinality($2::integer[])
        ON CONFLICT DO NOTHING
        RETURNING id
    ), placed_lines AS (
        INSERT INTO order_items (order_id, item_id, quantity)
        SELECT placed.id, line.item_id, line.quantity FROM placed CROSS JOIN line
    )
    INSERT INTO order_totals (order_id, total, computed_at)
    SELECT placed.id, (SELECT COALESCE(SUM(line.price * line.quantity), 0) FROM line), now()
    FROM placed
    ON CONFLICT (order_id) DO UPDATE
        SET total = EXCLUDED.total, computed_at = EXCLUDED.computed_at
    RETURNING order_id, total
"""


async def place_new_order(
    session: AsyncSession,
    customer_id: int,
    lines: Sequence[OrderLine],
    idempotency_key: str | None,
    job_id: str | None = None,
) -> PlacedOrder | None:
    """`place_order` for the common case, a new and valid order, as one statement on a session
    of an AUTOCOMMIT engine (db/direct.py). None, with nothing written, for every other case: a
    repeat, a conflict, an unknown customer or item; `place_order` then answers it.

    Lines must already be validated (positive quantities, distinct items).
    """
    placed = await fetch_row(
        session,
        PLACE_NEW_ORDER_DRIVER_SQL,
        customer_id,
        [line.item_id for line in lines],
        [line.quantity for line in lines],
        idempotency_key,
        job_id,
    )
    if placed is None:
        return None
    order_id, total = int(placed["order_id"]), Decimal(placed["total"])
    return PlacedOrder(order_id=order_id, total=total, created=True)


async def place_order(
    session: AsyncSession,
    customer_id: int,
    lines: Sequence[OrderLine],
    idempotency_key: str | None,
    job_id: str | None = None,
) -> PlacedOrder:
    """Insert an order, its lines and its total. A repeat of the request (same idempotency key, or
    the same queue job run again) returns the first order; the key or job sent with another
    customer or other lines raises IdempotencyConflictError, also when the two race.

    Lines must already be validated (positive quantities, distinct items). Never commits.
    """
    item_ids = [line.item_id for line in lines]
    params = {
        "customer_id": customer_id,
        "item_ids": item_ids,
        "idempotency_key": idempotency_key,
        "job_id": job_id,
    }
    found = (await session.execute(LOOKUP, params)).one()
    if found.existing_order_id is not None:
        return await _existing(session, found, customer_id, lines, idempotency_key, job_id)
    if not found.customer_exists:
        raise UnknownCustomerError(customer_id)
    unknown = sorted(set(item_ids) - set(found.known_items))
    if unknown:
        raise UnknownItemsError(unknown)

    order_id = (await session.execute(INSERT_ORDER, params)).scalar_one_or_none()
    if order_id is None:  # another producer placed it with this key a moment ago
        found = (await session.execute(LOOKUP, params)).one()
        return await _existing(session, found, customer_id, lines, idempotency_key, job_id)

    await session.execute(
        INSERT_LINES,
        {
            "order_id": order_id,
            "item_ids": item_ids,
            "quantities": [line.quantity for line in lines],
        },
    )
    total = await upsert_order_total(session, order_id)
    assert total is not None  # inserted in this transaction
    return PlacedOrder(order_id=int(order_id), total=total, created=True)


async def _existing(
    session: AsyncSession,
    found: Row[Any],
    customer_id: int,
    lines: Sequence[OrderLine],
    idempotency_key: str | None,
    job_id: str | None,
) -> PlacedOrder:
    """The order a repeated key (or job) placed before, if it was placed for this very request."""
    _refuse_another_request(found, customer_id, lines, idempotency_key, job_id)
    order_id = int(found.existing_order_id)
    total = await upsert_order_total(session, order_id)
    assert total is not None  # orders are never deleted by this service
    return PlacedOrder(order_id=order_id, total=total, created=False)


def _refuse_another_request(
    found: Row[Any],
    customer_id: int,
    lines: Sequence[OrderLine],
    idempotency_key: str | None,
    job_id: str | None,
) -> None:
    """A key names one request (as payment APIs have it): the same customer and the same lines."""
    if found.existing_customer_id != customer_id:
        difference = "for another customer"
    elif {(item_id, quantity) for item_id, quantity in found.existing_lines} != {
        (line.item_id, line.quantity) for line in lines
    }:
        difference = "with other lines"
    else:
        return
    keyed = idempotency_key is not None and found.existing_key == idempotency_key
    used_as = f"idempotency key {idempotency_key!r}" if keyed else f"job id {job_id!r}"
    raise IdempotencyConflictError(used_as, difference)
