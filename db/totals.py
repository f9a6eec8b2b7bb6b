"""Set-based order totals: one statement computes, upserts and reports a whole list of orders."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, BIGINT
from sqlalchemy.ext.asyncio import AsyncSession

from db.direct import fetch_row

ZERO = Decimal("0.00")

# LEFT JOINs so an order with no lines totals 0.00 (never NULL): the computation every statement
# here shares, completed by a WHERE and GROUP BY o.id.
SELECT_ORDER_TOTALS = """
    SELECT o.id AS order_id, COALESCE(SUM(i.price * oi.quantity), 0) AS total, now() AS computed_at
    FROM orders o
    LEFT JOIN order_items oi ON oi.order_id = o.id
    LEFT JOIN item i ON i.id = oi.item_id
"""
INSERT_ORDER_TOTALS = "INSERT INTO order_totals (order_id, total, computed_at)"
# Recomputing a total overwrites the stored one: every statement here is idempotent.
ON_CONFLICT_UPDATE_TOTAL = """
    ON CONFLICT (order_id) DO UPDATE
        SET total = EXCLUDED.total, computed_at = EXCLUDED.computed_at
"""

# Rows are upserted in id order so two workers writing overlapping chunks take row locks in the
# same order and cannot deadlock.
UPSERTED_TOTALS = f"""
    WITH requested AS (
        SELECT DISTINCT unnest(CAST(:order_ids AS bigint[])) AS id
    ), computed AS (
        {SELECT_ORDER_TOTALS}
        WHERE o.id IN (SELECT id FROM requested)
        GROUP BY o.id
        ORDER BY o.id
    ), upserted AS (
        {INSERT_ORDER_TOTALS}
        SELECT order_id, total, computed_at FROM computed
        {ON_CONFLICT_UPDATE_TOTAL}
        RETURNING order_id, total
    ), outcome AS (
        SELECT
            (SELECT count(*) FROM requested) AS requested,
            (SELECT count(*) FROM upserted) AS computed,
            (SELECT COALESCE(SUM(total), 0) FROM upserted) AS total_sum,
            ARRAY(
                SELECT id FROM requested WHERE id NOT IN (SELECT order_id FROM computed) ORDER BY id
            ) AS missing
    )
"""
UPSERT_TOTALS = text(
    f"{UPSERTED_TOTALS} SELECT computed, total_sum, missing FROM outcome"
).bindparams(bindparam("order_ids", type_=ARRAY(BIGINT)))

# The same, recording the sub-chunk's figures for its batch in the same statement (so the same
# transaction): a rerun finds its row and adds nothing, so batch figures count each id once.
UPSERT_TOTALS_FOR_BATCH = text(
    f"""
    {UPSERTED_TOTALS}, recorded AS (
        INSERT INTO batch_subchunks
            (batch_id, first_id, job_id, requested, computed, total_sum, missing)
        SELECT :batch_id, (SELECT min(id) FROM requested), :job_id,
            requested, computed, total_sum, missing
        FROM outcome
        ON CONFLICT (batch_id, first_id) DO NOTHING
    )
    SELECT computed, total_sum, missing FROM outcome
    """
).bindparams(bindparam("order_ids", type_=ARRAY(BIGINT)))

# One order: the same computation without the list machinery (the per-order job's hot path).
UPSERT_ONE_TOTAL = text(
    f"""
    {INSERT_ORDER_TOTALS}
    {SELECT_ORDER_TOTALS}
    WHERE o.id = :order_id
    GROUP BY o.id
    {ON_CONFLICT_UPDATE_TOTAL}
    RETURNING total
    """
)
# The same statement in asyncpg's placeholder style, for sending it to the driver directly.
UPSERT_ONE_TOTAL_DRIVER_SQL = UPSERT_ONE_TOTAL.text.replace(":order_id", "$1::bigint")

SELECT_TOTALS = text(
    "SELECT order_id, total FROM order_totals WHERE order_id = ANY(:order_ids)"
).bindparams(bindparam("order_ids", type_=ARRAY(BIGINT)))


@dataclass(frozen=True, slots=True)
class TotalsOutcome:
    computed: int
    total_sum: Decimal
    missing: list[int]

    def __add__(self, other: TotalsOutcome) -> TotalsOutcome:
        return TotalsOutcome(
            computed=self.computed + other.computed,
            total_sum=self.total_sum + other.total_sum,
            missing=sorted(self.missing + other.missing),
        )


NOTHING = TotalsOutcome(computed=0, total_sum=ZERO, missing=[])


async def upsert_totals(session: AsyncSession, order_ids: Sequence[int]) -> TotalsOutcome:
    """Compute and store the totals of `order_ids`; unknown ids come back in `missing`.

    Idempotent: running it again writes the same totals. Never commits.
    """
    if not order_ids:
        return NOTHING
    return _outcome((await session.execute(UPSERT_TOTALS, {"order_ids": list(order_ids)})).one())


def _outcome(row: Row[Any]) -> TotalsOutcome:
    return TotalsOutcome(
        computed=int(row.computed),
        total_sum=Decimal(row.total_sum).quantize(ZERO),
        missing=list(row.missing),
    )


@dataclass(frozen=True, slots=True)
class BatchPart:
    """Which batch a sub-chunk belongs to, and the job computing it."""

    batch_id: str
    job_id: str


async def upsert_totals_for_batch(
    session: AsyncSession, order_ids: Sequence[int], part: BatchPart
) -> TotalsOutcome:
    """`upsert_totals`, recording the sub-chunk's figures for its batch in the same statement.

    Ids in a batch are distinct, so the sub-chunk's smallest id names it: a rerun is counted once.
    """
    if not order_ids:
        return NOTHING
    values = {"order_ids": list(order_ids), "batch_id": part.batch_id, "job_id": part.job_id}
    return _outcome((await session.execute(UPSERT_TOTALS_FOR_BATCH, values)).one())


async def upsert_order_total(session: AsyncSession, order_id: int) -> Decimal | None:
    """The total of one order, stored in the session's transaction; None if it does not exist."""
    total = (await session.execute(UPSERT_ONE_TOTAL, {"order_id": order_id})).scalar_one_or_none()
    return None if total is None else Decimal(total)


async def upsert_order_total_direct(session: AsyncSession, order_id: int) -> Decimal | None:
    """`upsert_order_total` as a transaction of its own, for the per-order job's hot path: one
    statement straight to the driver (db/direct.py), on a session of an AUTOCOMMIT engine."""
    row = await fetch_row(session, UPSERT_ONE_TOTAL_DRIVER_SQL, order_id)
    return None if row is None else Decimal(row[0])


async def stored_totals(session: AsyncSession, order_ids: Sequence[int]) -> dict[int, Decimal]:
    rows = await session.execute(SELECT_TOTALS, {"order_ids": list(order_ids)})
    return {int(row.order_id): Decimal(row.total) for row in rows}
