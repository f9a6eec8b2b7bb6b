"""Every job through a real in-process worker: result shapes, and bad input failing at once."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.failed_jobs import list_failures
from jobs.client import OrderClient
from tests.conftest import StartWorker
from tests.integration.test_queries import row_counts, totals_rows
from worker.settings import TotalsSettings

Sessions = async_sessionmaker[AsyncSession]
WAIT_S = 30


async def stored_result(redis: Redis, job_id: str) -> dict[str, Any]:
    """The raw result document arq keeps in Redis, as any consumer would read it."""
    data = await redis.get(f"arq:result:{job_id}")
    assert data is not None, f"no result stored for {job_id}"
    document: dict[str, Any] = json.loads(data)
    return document


# ---------------------------------------------------------------- result shapes


async def test_place_order_result_shape_and_idempotency(
    seeded: None, client: OrderClient, start_worker: StartWorker, sessionmaker: Sessions
) -> None:
    await start_worker()
    lines = [{"item_id": 3, "quantity": 2}, {"item_id": 4, "quantity": 1}]
    first = await client.wait(await client.place_order(2, lines, idempotency_key="shape"), WAIT_S)
    assert first.success, first.result
    assert set(first.result) == {"order_id", "total"}
    assert isinstance(first.result["order_id"], int)
    assert first.result["total"] == "23.00"
    before = await row_counts(sessionmaker)
    again = await client.wait(await client.place_order(2, lines, idempotency_key="shape"), WAIT_S)
    assert again.result == first.result
    assert await row_counts(sessionmaker) == before


async def test_place_order_with_a_used_key_and_another_basket_fails_as_bad_input(
    seeded: None, client: OrderClient, start_worker: StartWorker, sessionmaker: Sessions
) -> None:
    worker = await start_worker()
    lines = [{"item_id": 3, "quantity": 2}]
    first = await client.wait(await client.place_order(2, lines, idempotency_key="cart"), WAIT_S)
    assert first.success, first.result
    before = await row_counts(sessionmaker)
    other = [{"item_id": 3, "quantity": 3}]
    job_id = await client.place_order(2, other, idempotency_key="cart")
    outcome = await client.wait(job_id, WAIT_S)
    assert not outcome.success
    assert outcome.result == {
        "code": "idempotency_conflict",
        "message": "idempotency key 'cart' was first used with other lines;"
        " send a new key for a new order",
    }
    assert worker.jobs_retried == 0
    assert await row_counts(sessionmaker) == before
    async with sessionmaker() as session:
        failed = await list_failures(session, job_ids=[job_id])
    # Recorded as failed on its first try, never retried.
    assert [(row.error_code, row.tries) for row in failed] == [("idempotency_conflict", 1)]


async def test_compute_order_total_result_shape(
    seeded: None, client: OrderClient, start_worker: StartWorker, sessionmaker: Sessions
) -> None:
    await start_worker()
    for order_id, expected in {1: "30.00", 2: "12.00", 3: "0.00"}.items():
        outcome = await client.wait(await client.compute_order_total(order_id), WAIT_S)
        assert outcome.success, outcome.result
        assert outcome.result == {"order_id": order_id, "total": expected}
    assert await totals_rows(sessionmaker) == [
        (1, Decimal("30.00")),
        (2, Decimal("12.00")),
        (3, Decimal("0.00")),
    ]


async def test_batch_result_shape_with_missing_ids(
    seeded: None, client: OrderClient, start_worker: StartWorker, sessionmaker: Sessions
) -> None:
    await start_worker()
    job_id = await client.enqueue(
        "compute_batch_totals", order_ids=[3, 1, 404, 2, 405], batch_id="nightly"
    )
    outcome = await client.wait(job_id, WAIT_S)
    assert outcome.success, outcome.result
    assert outcome.result == {
        "batch_id": "nightly",
        "computed": 3,
        "missing": [404, 405],
        "total_sum": "42.00",
    }
    assert len(await totals_rows(sessionmaker)) == 3
    async with sessionmaker() as session:
        failed = await list_failures(session, job_ids=[job_id])
    assert failed == []  # unknown ids are not an error


async def test_batch_without_id_uses_the_job_id(
    seeded: None, client: OrderClient, start_worker: StartWorker
) -> None:
    await start_worker()
    job_id = await client.enqueue("compute_batch_totals", order_ids=[1, 2], batch_id=None)
    outcome = await client.wait(job_id, WAIT_S)
    assert outcome.success, outcome.result
    assert outcome.result["batch_id"] == job_id
    assert outcome.result["total_sum"] == "42.00"


async def test_same_batch_twice_gives_the_same_rows(
    seeded: None, client: OrderClient, start_worker: StartWorker, sessionmaker: Sessions
) -> None:
    await start_worker()
    order_ids = [1, 2, 3, 999]
    runs = []
    for _ in range(2):
        job_id = await client.enqueue(
            "compute_batch_totals", order_ids=order_ids, batch_id="repeat"
        )
        outcome = await client.wait(job_id, WAIT_S)
        assert outcome.success, outcome.result
        runs.append((outcome.result, await totals_rows(sessionmaker)))
    (first_result, first_rows), (second_result, second_rows) = runs
    assert second_result == first_result
    assert first_result["missing"] == [999]
    assert second_rows == first_rows
    assert [order_id for order_id, _ in first_rows] == [1, 2, 3]


async def test_repeated_ids_in_a_batch_are_totalled_once(
    seeded: None, client: OrderClient, start_worker: StartWorker, sessionmaker: Sessions
) -> None:
    await start_worker(totals=TotalsSettings(chunk_size=100, subchunk_size=1))
    job_id = await client.enqueue("compute_batch_totals", order_ids=[1, 1, 2, 1, 404, 404])
    outcome = await client.wait(job_id, WAIT_S)
    assert outcome.success, outcome.result
    assert outcome.result["computed"] == 2
    assert outcome.result["missing"] == [404]
    assert outcome.result["total_sum"] == "42.00"
    assert [order_id for order_id, _ in await totals_rows(sessionmaker)] == [1, 2]


# ---------------------------------------------------------------- bad input


@dataclass(frozen=True)
class BadJob:
    function: str
    code: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    args: tuple[Any, ...] = ()


ONE_LINE = [{"item_id": 1, "quantity": 1}]

BAD_JOBS = {
    "customer_id_as_string": BadJob("place_order", "invalid_payload", {"customer_id": "1"}),
    "quantity_zero": BadJob(
        "place_order", "invalid_payload", {"items": [{"item_id": 1, "quantity": 0}]}
    ),
    "quantity_negative": BadJob(
        "place_order", "invalid_payload", {"items": [{"item_id": 1, "quantity": -2}]}
    ),
    "duplicate_item_ids": BadJob(
        "place_order",
        "invalid_payload",
        {"items": [{"item_id": 2, "quantity": 1}, {"item_id": 2, "quantity": 3}]},
    ),
    "no_lines": BadJob("place_order", "invalid_payload", {"items": []}),
    "1001_lines": BadJob(
        "place_order",
        "invalid_payload",
        {"items": [{"item_id": n, "quantity": 1} for n in range(1, 1002)]},
    ),
    "unknown_kwarg": BadJob("place_order", "invalid_payload", {"coupon": "FREE"}),
    "positional_args": BadJob("compute_order_total", "invalid_payload", args=(1,)),
    "batch_ids_as_string": BadJob(
        "compute_batch_totals", "invalid_payload", {"order_ids": "1,2", "batch_id": None}
    ),
    "unknown_customer": BadJob("place_order", "unknown_customer", {"customer_id": 404}),
    "unknown_item": BadJob(
        "place_order", "unknown_item", {"items": [*ONE_LINE, {"item_id": 404, "quantity": 1}]}
    ),
    "unknown_order": BadJob("compute_order_total", "unknown_order", {"order_id": 404}),
    # 10.50 x 2,000,000,000 does not fit order_totals.total, numeric(12, 2).
    "total_overflow": BadJob(
        "place_order", "invalid_payload", {"items": [{"item_id": 3, "quantity": 2_000_000_000}]}
    ),
}


async def submit(client: OrderClient, bad: BadJob) -> str:
    kwargs = dict(bad.kwargs)
    if bad.function == "place_order":
        kwargs = {"customer_id": 1, "items": ONE_LINE, "idempotency_key": None, **kwargs}
    job = await client.redis.enqueue_job(
        bad.function, *bad.args, _queue_name=client.queue_name, **kwargs
    )
    assert job is not None
    return job.job_id


@pytest.mark.parametrize("bad", BAD_JOBS.values(), ids=BAD_JOBS.keys())
async def test_bad_input_fails_at_once_is_recorded_and_the_worker_carries_on(
    bad: BadJob,
    seeded: None,
    client: OrderClient,
    start_worker: StartWorker,
    sessionmaker: Sessions,
    redis: Redis,
) -> None:
    worker = await start_worker()
    before = await row_counts(sessionmaker)

    job_id = await submit(client, bad)
    outcome = await client.wait(job_id, WAIT_S)

    assert not outcome.success
    assert outcome.result["code"] == bad.code
    assert outcome.result["message"]
    stored = await stored_result(redis, job_id)
    assert stored["s"] is False
    assert stored["t"] == 1  # failed on its first try and was never retried
    assert worker.jobs_retried == 0
    assert await row_counts(sessionmaker) == before
    async with sessionmaker() as session:
        failed = await list_failures(session, job_ids=[job_id])
        dead_letters = (await session.execute(text("SELECT count(*) FROM failed_jobs"))).scalar()
    assert [(row.function, row.error_code, row.tries) for row in failed] == [
        (bad.function, bad.code, 1)
    ]
    assert dead_letters == 1

    good = await client.wait(await client.compute_order_total(1), WAIT_S)
    assert good.success, good.result
    assert good.result == {"order_id": 1, "total": "30.00"}
    assert (worker.jobs_failed, worker.jobs_retried) == (1, 0)
