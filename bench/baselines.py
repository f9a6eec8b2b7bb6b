"""The reference points the product is measured against, and the check every measurement ends with.

- The database's own limit: one INSERT ... SELECT SUM ... GROUP BY ... ON CONFLICT over all orders.
- The seed service's approach: a TaskGroup with one AsyncSession per order (SUM, then upsert).
Each is timed, then checked with worker.harness.checks.check_totals.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from decimal import Decimal

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bench.measure import Bench, Outcome
from bench.stack import truncate_totals
from db.engine import create_engine, create_sessionmaker
from db.models import Item, Order, OrderItem, OrderTotal
from db.totals import INSERT_ORDER_TOTALS, ON_CONFLICT_UPDATE_TOTAL, SELECT_ORDER_TOTALS
from worker.harness.checks import check_totals

# The product's computation over all orders in one statement: what PostgreSQL alone does.
SQL_LIMIT = text(
    f"{INSERT_ORDER_TOTALS} {SELECT_ORDER_TOTALS} GROUP BY o.id {ON_CONFLICT_UPDATE_TOTAL}"
)


async def sql_limit(bench: Bench) -> Outcome:
    """The database alone computing and upserting every order's total, timed and checked."""
    await truncate_totals(bench.engine)
    async with bench.engine.begin() as connection:
        started = time.perf_counter()
        await connection.execute(SQL_LIMIT)
    seconds = time.perf_counter() - started
    check = await check_totals(bench.engine, bench.first_id, bench.last_id)
    return Outcome(bench.orders, seconds, verification=check)


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


async def seed_approach(bench: Bench, orders: int) -> Outcome:
    """A TaskGroup of one task (and one session) per order over a pool of 5, timed and checked.

    The seed's variant without a pool opens one connection per task and fails with "too many
    connections" long before 2,000 orders; it is not run.
    """
    await truncate_totals(bench.engine)
    order_ids = range(bench.first_id, bench.first_id + orders)
    engine = create_engine(bench.database_url, pool_size=SEED_POOL_SIZE, pool_timeout_s=300)
    try:
        sessions = create_sessionmaker(engine)
        async with contextlib.AsyncExitStack() as warm:  # open the pool outside the timing
            for _ in range(SEED_POOL_SIZE):
                await warm.enter_async_context(engine.connect())
        started = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for order_id in order_ids:
                group.create_task(_seed_order_total(sessions, order_id))
        seconds = time.perf_counter() - started
    finally:
        await engine.dispose()
    check = await check_totals(bench.engine, order_ids[0], order_ids[-1])
    return Outcome(orders, seconds, verification=check)
