"""The independent totals check every test, soak and benchmark ends with: each stored total
against a GROUP BY written here, apart from db/totals.py (a check must not share the code it
checks)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import text
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
