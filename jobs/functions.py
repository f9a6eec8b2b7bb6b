"""The public jobs. Each opens its own AsyncSession; one transaction per unit of work."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

from arq.worker import Function, func
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from db import batches, orders, totals
from jobs.context import JobContext
from jobs.errors import (
    IdempotencyConflictError,
    InvalidPayloadError,
    UnknownCustomerError,
    UnknownItemError,
    UnknownOrderError,
    sqlstate,
)
from jobs.models import (
    BatchTotalsResult,
    ComputeBatchTotalsPayload,
    ComputeOrderTotalPayload,
    OrderTotalResult,
    PlaceOrderPayload,
)
from jobs.runner import job_entry

NUMERIC_OVERFLOW = "22003"
MAX_TOTAL = "9999999999.99"  # order_totals.total is numeric(12, 2)


async def place_order(ctx: JobContext, payload: PlaceOrderPayload) -> OrderTotalResult:
    lines = [orders.OrderLine(line.item_id, line.quantity) for line in payload.items]
    request = (payload.customer_id, lines, payload.idempotency_key, ctx["job_id"])
    try:
        async with ctx["db_slots"]:
            # A new, valid order in one round trip; anything else (a repeat, a conflict, an
            # unknown customer or item) wrote nothing there and gets the full checks.
            async with ctx["single_statement_sessionmaker"]() as session:
                placed = await orders.place_new_order(session, *request)
            if placed is None:
                async with ctx["sessionmaker"].begin() as session:
                    placed = await orders.place_order(session, *request)
    except orders.UnknownCustomerError as error:
        raise UnknownCustomerError(str(error)) from None
    except orders.UnknownItemsError as error:
        raise UnknownItemError(str(error)) from None
    except orders.IdempotencyConflictError as error:
        raise IdempotencyConflictError(str(error)) from None
    except DBAPIError as error:
        if sqlstate(error) == NUMERIC_OVERFLOW:
            raise InvalidPayloadError(f"order total exceeds {MAX_TOTAL}") from None
        raise
    return OrderTotalResult(order_id=placed.order_id, total=placed.total)


async def compute_order_total(
    ctx: JobContext, payload: ComputeOrderTotalPayload
) -> OrderTotalResult:
    async with ctx["db_slots"], ctx["single_statement_sessionmaker"]() as session:
        total = await totals.upsert_order_total_direct(session, payload.order_id)
    if total is None:
        raise UnknownOrderError(f"order {payload.order_id} does not exist")
    return OrderTotalResult(order_id=payload.order_id, total=total)


async def compute_batch_totals(
    ctx: JobContext, payload: ComputeBatchTotalsPayload
) -> BatchTotalsResult:
    size = ctx["policy"].subchunk_size
    part = None
    if payload.batch_id is not None:
        part = totals.BatchPart(batch_id=payload.batch_id, job_id=ctx["job_id"])
        # Every chunk of a batch splits alike, on any replica and in any rerun: its sub-chunks
        # are recorded by their smallest id, and another split would count ids twice.
        async with _batch_session(ctx) as session:
            size = await batches.batch_subchunk_size(session, part.batch_id, size)
    # Distinct (a repeated id would be summed once per sub-chunk it lands in) and sorted, so a
    # rerun splits the ids into the same sub-chunks and its batch records are found again.
    order_ids = sorted(set(payload.order_ids))
    subchunks = [order_ids[start : start + size] for start in range(0, len(order_ids), size)]
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(_upsert_subchunk(ctx, ids, part)) for ids in subchunks]
    outcome = sum((task.result() for task in tasks), start=totals.NOTHING)
    return BatchTotalsResult(
        batch_id=payload.batch_id or ctx["job_id"],
        computed=outcome.computed,
        missing=outcome.missing,
        total_sum=outcome.total_sum,
    )


async def _upsert_subchunk(
    ctx: JobContext, order_ids: Sequence[int], part: totals.BatchPart | None
) -> totals.TotalsOutcome:
    # Its own session (never shared between tasks); one statement, so its own transaction, which
    # records the sub-chunk's progress for its batch together with its totals.
    async with _batch_session(ctx) as session:
        if part is None:
            return await totals.upsert_totals(session, order_ids)
        return await totals.upsert_totals_for_batch(session, order_ids, part)


@contextlib.asynccontextmanager
async def _batch_session(ctx: JobContext) -> AsyncIterator[AsyncSession]:
    """A single-statement session for batch work, within the batch's share of the connections
    (`database.batch_connections`), so interactive jobs always find one free."""
    async with (
        ctx["batch_db_slots"],
        ctx["db_slots"],
        ctx["single_statement_sessionmaker"]() as session,
    ):
        yield session


ARQ_TIMEOUT_MARGIN_S = 2.0


def registry(job_timeout_s: float, max_tries: int) -> list[Function]:
    """The one explicit list of jobs a worker runs, under their public names.

    arq's own timeout sits just above the job's so the job's (retryable) timeout fires first. arq
    keeps a started job's in-progress key for its timeout + 10 s: only a backstop, since a killed
    replica's jobs move on once its lease lapses (worker/arq_seam/leases.py).
    """
    arq_timeout = job_timeout_s + ARQ_TIMEOUT_MARGIN_S
    return [
        func(
            job_entry("place_order", PlaceOrderPayload, place_order),
            name="place_order",
            timeout=arq_timeout,
            max_tries=max_tries,
        ),
        func(
            job_entry("compute_order_total", ComputeOrderTotalPayload, compute_order_total),
            name="compute_order_total",
            timeout=arq_timeout,
            max_tries=max_tries,
        ),
        func(
            job_entry("compute_batch_totals", ComputeBatchTotalsPayload, compute_batch_totals),
            name="compute_batch_totals",
            timeout=arq_timeout,
            max_tries=max_tries,
        ),
    ]
