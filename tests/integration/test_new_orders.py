"""The one-statement path for a new order (`place_new_order`) on a real PostgreSQL: what it writes
is what `place_order` writes, and anything but a new, valid order writes nothing and returns None
(the job then takes `place_order`'s path)."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from db.engine import create_sessionmaker
from db.orders import OrderLine, PlacedOrder, place_new_order, place_order
from jobs.errors import sqlstate
from tests.conftest import poll_until
from tests.integration.test_idempotency import second_is_waiting_on_a_lock
from tests.integration.test_queries import (
    Sessions,
    add_customer,
    add_item,
    expected_totals,
    place,
    row_counts,
    totals_rows,
)


def basket(lines: dict[int, int]) -> list[OrderLine]:
    return [OrderLine(item, quantity) for item, quantity in lines.items()]


async def place_new(
    engine: AsyncEngine,
    customer_id: int,
    lines: dict[int, int],
    key: str | None = None,
    job_id: str | None = None,
) -> PlacedOrder | None:
    autocommit = create_sessionmaker(engine.execution_options(isolation_level="AUTOCOMMIT"))
    async with autocommit() as session:
        return await place_new_order(session, customer_id, basket(lines), key, job_id)


async def test_a_new_order_writes_its_lines_and_its_exact_total(
    seeded: None, engine: AsyncEngine, sessionmaker: Sessions
) -> None:
    placed = await place_new(engine, 2, {1: 2, 3: 1}, key="new-1", job_id="job-new-1")
    assert placed is not None and placed.created
    assert placed.total == Decimal("20.50")
    empty = await place_new(engine, 3, {}, key="new-empty")  # no lines: 0.00, as place_order
    assert empty is not None and empty.total == Decimal("0.00")
    stored = dict(await totals_rows(sessionmaker))
    assert stored == {placed.order_id: Decimal("20.50"), empty.order_id: Decimal("0.00")}
    reference = await expected_totals(sessionmaker)  # summed in Python from the stored lines
    assert reference[placed.order_id] == Decimal("20.50")
    # The same request through the full path is a repeat of this order, not a new one.
    assert await place(sessionmaker, 2, {3: 1, 1: 2}, key="new-1") == (
        placed.order_id,
        Decimal("20.50"),
        False,
    )


@pytest.mark.parametrize(
    ("customer_id", "lines", "key", "job_id"),
    [
        (1, {2: 3}, "used-key", None),  # the key placed an order before
        (1, {2: 3}, "another-key", "used-job"),  # so did the job id
        (999, {1: 1}, "unknown-customer", None),
        (1, {1: 1, 98: 2}, "unknown-item", None),
    ],
    ids=["repeated-key", "repeated-job", "unknown-customer", "unknown-item"],
)
async def test_anything_but_a_new_valid_order_writes_nothing(
    seeded: None,
    engine: AsyncEngine,
    sessionmaker: Sessions,
    customer_id: int,
    lines: dict[int, int],
    key: str,
    job_id: str | None,
) -> None:
    async with sessionmaker.begin() as session:
        await place_order(session, 1, basket({2: 3}), "used-key", "used-job")
    before = await row_counts(sessionmaker)
    assert await place_new(engine, customer_id, lines, key, job_id) is None
    assert await row_counts(sessionmaker) == before


async def test_a_key_being_placed_at_this_moment_writes_nothing(
    seeded: None, engine: AsyncEngine, sessionmaker: Sessions
) -> None:
    """The statement waits on the unique key until the other placement commits, then does
    nothing: the job's full path then finds that order."""
    async with sessionmaker.begin() as session:
        winner = await place_order(session, 1, basket({1: 1}), "racing-key")
        loser = asyncio.create_task(place_new(engine, 1, {1: 1}, key="racing-key"))
        await poll_until(lambda: second_is_waiting_on_a_lock(sessionmaker), "the second insert")
    assert await loser is None
    assert await place(sessionmaker, 1, {1: 1}, key="racing-key") == (
        winner.order_id,
        Decimal("5.00"),
        False,
    )
    assert (await row_counts(sessionmaker))["orders"] == 4  # the sample's three, and this one


async def test_a_total_too_large_fails_whole(engine: AsyncEngine, sessionmaker: Sessions) -> None:
    customer_id = await add_customer(sessionmaker)
    dear = await add_item(sessionmaker, "99999999.99", name="island")
    before = await row_counts(sessionmaker)
    with pytest.raises(DBAPIError) as raised:
        await place_new(engine, customer_id, {dear: 1000}, key="too-dear")
    assert sqlstate(raised.value) == "22003"  # numeric overflow: the job's InvalidPayloadError
    assert await row_counts(sessionmaker) == before
