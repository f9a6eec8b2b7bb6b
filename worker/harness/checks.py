"""The independent totals check every test, soak and benchmark ends with: each stored total
against a GROUP BY written here, apart from db/totals.py (a check must not share the code it
checks)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import String, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncEngine

CHECK_TOTALS = text(
    """
    WITH expected AS (
        SELECT o.id, COALESCE(SUM(i.price * oi.quantity), 0) AS total
        FROM orders o
        LEFT JOIN order_items oi ON oi.order_id = o.id
        LEFT JOIN item i ON i.id = oi.item_id
        WHERE o.id BETWEEN :first_id AND :last_id
        GROUP BY o.id
    )
    SELECT count(*) AS expected,
           count(*) FILTER (WHERE t.order_id IS NULL) AS absent,
           count(*) FILTER (WHERE t.order_id IS NOT NULL AND t.total <> e.total) AS wrong,
           (SELECT count(*) FROM order_totals) AS stored,
           COALESCE(SUM(e.total), 0) AS expected_sum,
           (SELECT count(*) FROM failed_jobs) AS dead_letters
    FROM expected e LEFT JOIN order_totals t ON t.order_id = e.id
    """
)
EVERY_ORDER = (-(2**63), 2**63 - 1)
ORDERS_OF_JOBS = text(
    "SELECT job_id, array_agg(id ORDER BY id) FROM orders WHERE job_id = ANY(:ids) GROUP BY job_id"
).bindparams(bindparam("ids", type_=ARRAY(String)))


@dataclass(frozen=True, slots=True)
class TotalsCheck:
    expected: int  # orders in the range checked
    absent: int  # of those, without a stored total
    wrong: int  # of those, with a stored total that differs
    stored: int  # rows in order_totals, in the range or not
    expected_sum: Decimal
    dead_letters: int

    @property
    def ok(self) -> bool:
        return self.absent == 0 and self.wrong == 0 and self.stored == self.expected

    def describe(self) -> str:
        verdict = "verified" if self.ok else "MISMATCH"
        return (
            f"{verdict}: {self.expected} orders, {self.absent} without a total, "
            f"{self.wrong} wrong, {self.stored} rows stored"
        )


async def check_totals(
    engine: AsyncEngine, first_id: int | None = None, last_id: int | None = None
) -> TotalsCheck:
    """Orders `first_id..last_id` (every order by default) each have exactly the right total."""
    bounds = {
        "first_id": EVERY_ORDER[0] if first_id is None else first_id,
        "last_id": EVERY_ORDER[1] if last_id is None else last_id,
    }
    async with engine.connect() as connection:
        row = (await connection.execute(CHECK_TOTALS, bounds)).one()
    return TotalsCheck(
        expected=int(row.expected),
        absent=int(row.absent),
        wrong=int(row.wrong),
        stored=int(row.stored),
        expected_sum=Decimal(row.expected_sum),
        dead_letters=int(row.dead_letters),
    )


@dataclass(frozen=True, slots=True)
class OrdersCheck:
    """How `place_order` jobs' orders stand: each job made one order, the one its result names."""

    jobs: int
    duplicates: int  # orders beyond the first of a job
    lost: int  # jobs without an order
    misreported: int  # jobs whose result names another order than the one they made

    @property
    def ok(self) -> bool:
        return self.duplicates == self.lost == self.misreported == 0


async def check_orders(engine: AsyncEngine, reported: Mapping[str, object]) -> OrdersCheck:
    """`reported`: each `place_order` job's id, and the order id its result names (or None)."""
    async with engine.connect() as connection:
        rows = (await connection.execute(ORDERS_OF_JOBS, {"ids": list(reported)})).all()
    made = {str(job_id): list(order_ids) for job_id, order_ids in rows}
    return OrdersCheck(
        jobs=len(reported),
        duplicates=sum(len(order_ids) - 1 for order_ids in made.values()),
        lost=len(reported) - len(made),
        misreported=sum(1 for job_id, ids in made.items() if reported[job_id] != ids[0]),
    )
