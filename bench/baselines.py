"""The reference point batch rows are measured against: the database's own limit, one
INSERT ... SELECT SUM ... GROUP BY ... ON CONFLICT over all orders, timed, then checked with
worker.harness.checks.check_totals."""

from __future__ import annotations

import time

from sqlalchemy import text

from bench.measure import Bench, Outcome
from bench.stack import truncate_totals
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
