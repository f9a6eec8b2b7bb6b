"""The reference points the product is measured against, and the check every measurement ends with.

- The database's own limit: one INSERT ... SELECT SUM ... GROUP BY ... ON CONFLICT over all orders.
- The seed service's approach: a TaskGroup with one AsyncSession per order (SUM, then upsert).
(Every measurement ends with worker.harness.checks.check_totals.)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from decimal import Decimal

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from db.engine import create_engine, create_sessionmaker
from db.models import Item, Order, OrderItem, OrderTotal
from db.totals import INSERT_ORDER_TOTALS, ON_CONFLICT_UPDATE_TOTAL, SELECT_ORDER_TOTALS

# The product's computation over all orders in one statement: what PostgreSQL alone does.
SQL_LIMIT = text(
    f"{INSERT_ORDER_TOTALS} {SELECT_ORDER_TOTALS} GROUP BY o.id {ON_CONFLICT_UPDATE_TOTAL}"
)


async def truncate_totals(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.execute(text("TRUNCATE order_totals"))


async def order_id_range(engine: AsyncEngine) -> tuple[int, int]:
    async with engine.connect() as connection:
        row = (await connection.execute(text("SELECT min(id), max(id) FROM orders"))).one()
    return int(row[0]), int(row[1])


async def sql_limit(engine: AsyncEngine) -> float:
    """Seconds for the database alone to compute and upsert every order's total."""
    await truncate_totals(engine)
    async with engine.begin() as connection:
        started = time.perf_counter()
        await connection.execute(SQL_LIMIT)
    return time.perf_counter() - started


# ---------------------------------------------------------------- the seed service's approach

SEED_POOL_SIZE = 5


async def _seed_order_total(sessions: async_sessionmaker[AsyncSession], order_id: int) -> None:
    # As the seed: its own session per order, an ORM SUM over the joins, then the upsert.
    async with sessions() as session:
        total = await session.scalar(
            select(func.sum(Item.price * OrderItem.quantity))
            .select_from(Order)
            .join(OrderItem, OrderItem.order_id == Order.id)
            .join(Item, Item.id == OrderItem.item_id)
            .where(Order.id == order_id)
        )
        # The seed stored NULL for an order without lines; 0 here, so the check can pass.
        upsert = insert(OrderTotal).values(order_id=order_id, total=total or Decimal("0.00"))
        await session.execute(
            upsert.on_conflict_do_update(
                index_elements=[OrderTotal.order_id],
                set_={"total": upsert.excluded.total, "computed_at": func.now()},
            )
        )
        await session.commit()


async def seed_approach(database_url: str, order_ids: Sequence[int]) -> float:
    """Seconds for a TaskGroup of one task (and one session) per order, over a pool of 5.

    The seed's variant without a pool opens one connection per task and fails with "too many
    connections" long before 2,000 orders; it is not run.
    """
    engine = create_engine(database_url, pool_size=SEED_POOL_SIZE, pool_timeout_s=300)
    try:
        sessions = create_sessionmaker(engine)
        async with contextlib.AsyncExitStack() as warm:  # open the pool outside the timing
            for _ in range(SEED_POOL_SIZE):
                await warm.enter_async_context(engine.connect())
        started = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for order_id in order_ids:
                group.create_task(_seed_order_total(sessions, order_id))
        return time.perf_counter() - started
    finally:
        await engine.dispose()
