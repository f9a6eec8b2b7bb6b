"""The db layer on a real PostgreSQL: set-based totals and placing orders, without a worker."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from db.engine import create_sessionmaker
from db.orders import (
    OrderLine,
    UnknownCustomerError,
    UnknownItemsError,
    place_order,
)
from db.totals import stored_totals, upsert_order_total_direct, upsert_totals
from jobs.errors import is_transient
from tests.conftest import poll_until

Sessions = async_sessionmaker[AsyncSession]
SAMPLE_TOTALS = {1: Decimal("30.00"), 2: Decimal("12.00"), 3: Decimal("0.00")}


async def add_item(sessions: Sessions, price: str, name: str = "factory item") -> int:
    async with sessions.begin() as session:
        inserted = await session.execute(
            text("INSERT INTO item (name, price) VALUES (:name, :price) RETURNING id"),
            {"name": name, "price": Decimal(price)},
        )
        return int(inserted.scalar_one())


async def add_customer(sessions: Sessions, name: str = "Factory Customer") -> int:
    async with sessions.begin() as session:
        address_id = (
            await session.execute(
                text(
                    "INSERT INTO address (flat_number, post_code) VALUES (1, '00042') RETURNING id"
                )
            )
        ).scalar_one()
        inserted = await session.execute(
            text("INSERT INTO customer (name, address_id) VALUES (:name, :address) RETURNING id"),
            {"name": name, "address": address_id},
        )
        return int(inserted.scalar_one())


async def row_counts(sessions: Sessions) -> dict[str, int]:
    async with sessions() as session:
        return {
            table: int((await session.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())
            for table in ("orders", "order_items", "order_totals")
        }


async def totals_rows(sessions: Sessions) -> list[tuple[int, Decimal]]:
    async with sessions() as session:
        rows = await session.execute(
            text("SELECT order_id, total FROM order_totals ORDER BY order_id")
        )
        return [(int(row.order_id), Decimal(row.total)) for row in rows]


async def expected_totals(sessions: Sessions) -> dict[int, Decimal]:
    """Every order's total summed in Python from its raw lines: the independent reference."""
    async with sessions() as session:
        order_ids = (await session.execute(text("SELECT id FROM orders"))).scalars()
        expected = {int(order_id): Decimal("0.00") for order_id in order_ids}
        lines = await session.execute(
            text(
                "SELECT oi.order_id, i.price, oi.quantity"
                " FROM order_items oi JOIN item i ON i.id = oi.item_id"
            )
        )
        for order_id, price, quantity in lines:
            assert isinstance(price, Decimal)
            expected[int(order_id)] += price * quantity
    return expected


async def place(
    sessions: Sessions, customer_id: int, lines: dict[int, int], key: str | None = None
) -> tuple[int, Decimal, bool]:
    async with sessions.begin() as session:
        placed = await place_order(
            session, customer_id, [OrderLine(item, qty) for item, qty in lines.items()], key
        )
    return placed.order_id, placed.total, placed.created


# ---------------------------------------------------------------- upsert_totals


async def test_sample_totals_are_exact_and_an_empty_order_is_zero(
    seeded: None, sessionmaker: Sessions
) -> None:
    async with sessionmaker.begin() as session:
        outcome = await upsert_totals(session, [1, 2, 3])
    assert outcome.computed == 3
    assert outcome.missing == []
    assert outcome.total_sum == Decimal("42.00")
    assert dict(await totals_rows(sessionmaker)) == SAMPLE_TOTALS
    assert await expected_totals(sessionmaker) == SAMPLE_TOTALS
    async with sessionmaker() as session:
        null_totals = await session.execute(
            text("SELECT count(*) FROM order_totals WHERE total IS NULL")
        )
        assert null_totals.scalar_one() == 0
        assert (await stored_totals(session, [3]))[3] == Decimal("0.00")


async def test_unknown_ids_are_reported_missing_and_not_written(
    seeded: None, sessionmaker: Sessions
) -> None:
    async with sessionmaker.begin() as session:
        outcome = await upsert_totals(session, [2, 404, 9_000_000_000])
    assert outcome.computed == 1
    assert outcome.missing == [404, 9_000_000_000]
    assert outcome.total_sum == Decimal("12.00")
    assert await totals_rows(sessionmaker) == [(2, Decimal("12.00"))]


async def test_duplicate_ids_are_counted_once(seeded: None, sessionmaker: Sessions) -> None:
    async with sessionmaker.begin() as session:
        outcome = await upsert_totals(session, [1, 1, 2, 2, 2, 77, 77])
    assert outcome.computed == 2
    assert outcome.total_sum == Decimal("42.00")
    assert outcome.missing == [77]
    assert await totals_rows(sessionmaker) == [(1, Decimal("30.00")), (2, Decimal("12.00"))]


async def test_running_totals_twice_gives_identical_rows(
    seeded: None, sessionmaker: Sessions
) -> None:
    async with sessionmaker.begin() as session:
        first = await upsert_totals(session, [1, 2, 3])
    rows_after_first = await totals_rows(sessionmaker)
    async with sessionmaker.begin() as session:
        second = await upsert_totals(session, [3, 2, 1])
    assert second == first
    assert await totals_rows(sessionmaker) == rows_after_first
    assert [order_id for order_id, _ in rows_after_first] == [1, 2, 3]


async def test_no_ids_writes_nothing(seeded: None, sessionmaker: Sessions) -> None:
    async with sessionmaker.begin() as session:
        outcome = await upsert_totals(session, [])
    assert (outcome.computed, outcome.total_sum, outcome.missing) == (0, Decimal("0.00"), [])
    assert await totals_rows(sessionmaker) == []


# ---------------------------------------------------------------- place_order


async def test_place_order_writes_order_lines_and_total(
    seeded: None, sessionmaker: Sessions
) -> None:
    order_id, total, created = await place(sessionmaker, 2, {1: 2, 3: 1})
    assert created
    assert total == Decimal("20.50")
    async with sessionmaker() as session:
        owner = await session.execute(
            text("SELECT customer_id FROM orders WHERE id = :id"), {"id": order_id}
        )
        assert owner.scalar_one() == 2
        lines = await session.execute(
            text("SELECT item_id, quantity FROM order_items WHERE order_id = :id ORDER BY item_id"),
            {"id": order_id},
        )
        assert [tuple(row) for row in lines] == [(1, 2), (3, 1)]
        assert await stored_totals(session, [order_id]) == {order_id: Decimal("20.50")}


async def test_unknown_customer_is_refused_and_nothing_written(
    seeded: None, sessionmaker: Sessions
) -> None:
    before = await row_counts(sessionmaker)
    with pytest.raises(UnknownCustomerError) as raised:
        await place(sessionmaker, 999, {1: 1}, key="refused-customer")
    assert raised.value.customer_id == 999
    assert await row_counts(sessionmaker) == before


async def test_unknown_items_are_refused_and_nothing_written(
    seeded: None, sessionmaker: Sessions
) -> None:
    before = await row_counts(sessionmaker)
    with pytest.raises(UnknownItemsError) as raised:
        await place(sessionmaker, 1, {1: 1, 98: 2, 97: 1}, key="refused-items")
    assert raised.value.item_ids == [97, 98]
    assert await row_counts(sessionmaker) == before


async def test_one_cent_order_is_exact(sessionmaker: Sessions) -> None:
    customer_id = await add_customer(sessionmaker)
    item_id = await add_item(sessionmaker, "0.01", name="penny sweet")
    order_id, total, _ = await place(sessionmaker, customer_id, {item_id: 1})
    assert total == Decimal("0.01")
    assert f"{total:.2f}" == "0.01"
    async with sessionmaker() as session:
        assert await stored_totals(session, [order_id]) == {order_id: Decimal("0.01")}


async def test_billion_order_is_exact(sessionmaker: Sessions) -> None:
    customer_id = await add_customer(sessionmaker)
    dear = await add_item(sessionmaker, "99999999.99", name="island")
    order_id, total, _ = await place(sessionmaker, customer_id, {dear: 10})
    expected = Decimal("99999999.99") * 10
    assert expected == Decimal("999999999.90")
    assert total == expected
    assert f"{total:.2f}" == "999999999.90"
    async with sessionmaker() as session:
        assert await stored_totals(session, [order_id]) == {order_id: expected}


# ---------------------------------------------------------------- upsert_order_total_direct


async def test_direct_order_total_is_exact_stored_and_none_for_an_unknown_order(
    seeded: None, engine: AsyncEngine
) -> None:
    autocommit = create_sessionmaker(engine.execution_options(isolation_level="AUTOCOMMIT"))
    for order_id, expected in SAMPLE_TOTALS.items():
        async with autocommit() as session:
            assert await upsert_order_total_direct(session, order_id) == expected
    async with autocommit() as session:
        assert await upsert_order_total_direct(session, 999_999) is None
    assert dict(await totals_rows(create_sessionmaker(engine))) == SAMPLE_TOTALS


async def test_direct_order_total_refuses_a_transactional_session(
    seeded: None, sessionmaker: Sessions
) -> None:
    async with sessionmaker() as session:
        with pytest.raises(ValueError, match="AUTOCOMMIT"):
            await upsert_order_total_direct(session, 1)
    assert await totals_rows(sessionmaker) == []


async def test_a_dead_connection_is_a_transient_error_and_leaves_the_pool(
    seeded: None, engine: AsyncEngine
) -> None:
    autocommit = create_sessionmaker(engine.execution_options(isolation_level="AUTOCOMMIT"))
    async with engine.connect() as killer:  # checked out first: never the victim itself
        async with autocommit() as session:
            connection = await session.connection()
            backend = (await connection.exec_driver_sql("SELECT pg_backend_pid()")).scalar_one()
        # The victim is back in the pool now; end its server process under it.
        await killer.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})

        async def backend_gone() -> bool:
            found = await killer.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": backend}
            )
            gone = int(found.scalar_one()) == 0
            # pg_stat_activity is one snapshot per transaction: the next look needs a new one.
            await killer.rollback()
            return gone

        await poll_until(backend_gone, "the backend to exit")
    async with autocommit() as session:
        with pytest.raises(DBAPIError) as raised:
            await upsert_order_total_direct(session, 1)
    assert is_transient(raised.value)
    # The next session gets a fresh connection, not the dead one back from the pool.
    async with autocommit() as session:
        assert await upsert_order_total_direct(session, 1) == SAMPLE_TOTALS[1]
