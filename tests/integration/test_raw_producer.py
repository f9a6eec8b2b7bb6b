"""A producer that is not Python: raw JSON written with plain Redis commands, as the README shows.

SET arq:job:<id> '{"t":1,"f":"place_order","a":[],"k":{...},"et":<ms>}' PX 86400000
ZADD <queue> <ms> <id>
GET arq:result:<id>   ->  {"s": true, "r": {...}, ...}
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import pickle
import random
import signal
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.failed_jobs import list_failures
from tests.conftest import StartWorker, poll_until
from tests.integration.test_queries import (
    add_customer,
    add_item,
    expected_totals,
    row_counts,
    totals_rows,
)
from worker.queue_depth import read_queue_depth
from worker.replica import OrderWorker
from worker.settings import Settings

Sessions = async_sessionmaker[AsyncSession]
JOB_EXPIRY_MS = 86_400_000
PAYLOAD_CAP = 2048


def now_ms() -> int:
    return int(time.time() * 1000)


def envelope(function: str, kwargs: dict[str, Any]) -> bytes:
    document = {"t": 1, "f": function, "a": [], "k": kwargs, "et": now_ms()}
    return json.dumps(document, separators=(",", ":")).encode()


async def produce_bytes(redis: Redis, queue_name: str, data: bytes) -> str:
    job_id = f"raw-{uuid.uuid4().hex}"
    # The same two commands as `SET ... PX 86400000` and `ZADD <queue> <ms> <id>` in redis-cli.
    await redis.set(f"arq:job:{job_id}", data, px=JOB_EXPIRY_MS)
    await redis.zadd(queue_name, {job_id: now_ms()})
    return job_id


async def produce(redis: Redis, queue_name: str, function: str, **kwargs: Any) -> str:
    return await produce_bytes(redis, queue_name, envelope(function, kwargs))


async def read_result(redis: Redis, job_id: str) -> dict[str, Any]:
    key = f"arq:result:{job_id}"

    async def stored() -> bool:
        return bool(await redis.exists(key))

    await poll_until(stored, f"result of {job_id}")
    data = await redis.get(key)
    assert data is not None
    document: dict[str, Any] = json.loads(data)
    return document


async def succeeded(redis: Redis, job_id: str) -> dict[str, Any]:
    document = await read_result(redis, job_id)
    assert document["s"] is True, document["r"]
    result: dict[str, Any] = document["r"]
    return result


async def place_raw_orders(
    redis: Redis, queue_name: str, sessionmaker: Sessions
) -> dict[int, Decimal]:
    """Three raw `place_order` jobs (a penny, near a billion, a sample basket), each checked;
    their order ids and expected totals."""
    customer_id = await add_customer(sessionmaker)
    penny = await add_item(sessionmaker, "0.01", name="penny sweet")
    island = await add_item(sessionmaker, "99999999.99", name="island")
    orders = {
        "penny": ([{"item_id": penny, "quantity": 1}], Decimal("0.01")),
        "billion": ([{"item_id": island, "quantity": 10}], Decimal("999999999.90")),
        "basket": (
            [{"item_id": 1, "quantity": 2}, {"item_id": 3, "quantity": 1}],
            Decimal("5.00") * 2 + Decimal("10.50"),
        ),
    }
    placed: dict[int, Decimal] = {}
    for key, (items, expected) in orders.items():
        job_id = await produce(
            redis,
            queue_name,
            "place_order",
            customer_id=customer_id,
            items=items,
            idempotency_key=f"raw-{key}",
        )
        result = await succeeded(redis, job_id)
        assert set(result) == {"order_id", "total"}
        assert isinstance(result["order_id"], int)
        assert result["total"] == f"{expected:.2f}"
        placed[result["order_id"]] = expected
    return placed


async def test_raw_json_jobs_give_exact_totals(
    seeded: None,
    start_worker: StartWorker,
    redis: Redis,
    queue_name: str,
    sessionmaker: Sessions,
) -> None:
    await start_worker()
    placed = await place_raw_orders(redis, queue_name, sessionmaker)

    reference = await expected_totals(sessionmaker)
    assert {order_id: reference[order_id] for order_id in placed} == placed
    assert reference[3] == Decimal("0.00")  # the sample's empty order

    for order_id in [3, *placed]:
        job_id = await produce(redis, queue_name, "compute_order_total", order_id=order_id)
        result = await succeeded(redis, job_id)
        assert result == {"order_id": order_id, "total": f"{reference[order_id]:.2f}"}
        assert Decimal(result["total"]) == reference[order_id]

    batch_ids = [*reference, 404]
    job_id = await produce(
        redis, queue_name, "compute_batch_totals", order_ids=batch_ids, batch_id="raw-batch"
    )
    result = await succeeded(redis, job_id)
    assert result == {
        "batch_id": "raw-batch",
        "computed": len(reference),
        "missing": [404],
        "total_sum": f"{sum(reference.values()):.2f}",
    }
    assert Decimal(result["total_sum"]) == Decimal("1000000062.41")
    assert dict(await totals_rows(sessionmaker)) == reference


async def test_raw_batch_without_id_is_named_after_its_job(
    seeded: None, start_worker: StartWorker, redis: Redis, queue_name: str
) -> None:
    await start_worker()
    job_id = await produce(redis, queue_name, "compute_batch_totals", order_ids=[2], batch_id=None)
    result = await succeeded(redis, job_id)
    assert result == {"batch_id": job_id, "computed": 1, "missing": [], "total_sum": "12.00"}


# ---------------------------------------------------------------- payloads never executed

VALID_ORDER = {
    "customer_id": 1,
    "items": [{"item_id": 1, "quantity": 1}],
    "idempotency_key": "never-placed",
}


def pickled() -> bytes:
    document = {"t": 1, "f": "place_order", "a": [], "k": VALID_ORDER, "et": now_ms()}
    return pickle.dumps(document)


def random_bytes() -> bytes:
    return random.Random(20240318).randbytes(512)


def truncated() -> bytes:
    whole = envelope("place_order", VALID_ORDER)
    return whole[: len(whole) // 2]


def oversized() -> bytes:
    # Valid JSON that would place an order if run; padding takes it over the byte cap.
    whole = envelope("place_order", VALID_ORDER)
    padded = whole[:-1] + b" " * (PAYLOAD_CAP + 100) + whole[-1:]
    assert json.loads(padded)["k"] == VALID_ORDER
    return padded


def json_array() -> bytes:
    return json.dumps(["place_order", VALID_ORDER]).encode()


def unknown_function() -> bytes:
    return envelope("drop_tables", {"cascade": True})


UNRUNNABLE = {
    "pickle": (pickled, "undecodable_payload"),
    "random_bytes": (random_bytes, "undecodable_payload"),
    "truncated_json": (truncated, "undecodable_payload"),
    "oversized": (oversized, "undecodable_payload"),
    "json_array": (json_array, "undecodable_payload"),
    "unknown_function": (unknown_function, "unknown_function"),
}


@pytest.mark.parametrize(("make", "code"), UNRUNNABLE.values(), ids=UNRUNNABLE.keys())
async def test_unrunnable_payload_is_recorded_and_skipped(
    make: Callable[[], bytes],
    code: str,
    seeded: None,
    settings: Settings,
    start_worker: StartWorker,
    redis: Redis,
    queue_name: str,
    sessionmaker: Sessions,
) -> None:
    worker = await start_worker(
        worker=settings.worker.model_copy(update={"max_payload_bytes": PAYLOAD_CAP})
    )
    before = await row_counts(sessionmaker)

    job_id = await produce_bytes(redis, queue_name, make())
    document = await read_result(redis, job_id)

    assert document["s"] is False
    assert document["r"]["code"] == code
    assert await row_counts(sessionmaker) == before
    async with sessionmaker() as session:
        failed = await list_failures(session, job_ids=[job_id])
    assert [row.error_code for row in failed] == [code]
    assert worker.jobs_complete == 0

    after = await produce(redis, queue_name, "compute_order_total", order_id=1)
    assert await succeeded(redis, after) == {"order_id": 1, "total": "30.00"}
    assert (worker.jobs_complete, worker.jobs_failed) == (1, 1)


# ---------------------------------------------------------------- known gaps (see the report)


async def test_payload_with_nul_characters_is_recorded(
    seeded: None, start_worker: StartWorker, redis: Redis, queue_name: str, sessionmaker: Sessions
) -> None:
    await start_worker()
    job_id = await produce_bytes(redis, queue_name, b"\x00" * 8)
    document = await read_result(redis, job_id)
    assert document["r"]["code"] == "undecodable_payload"
    async with sessionmaker() as session:
        failed = await list_failures(session, job_ids=[job_id])
    assert [row.error_code for row in failed] == ["undecodable_payload"]


async def test_result_larger_than_the_payload_cap_is_stored(
    seeded: None, settings: Settings, redis: Redis, queue_name: str
) -> None:
    capped = settings.worker.model_copy(update={"max_payload_bytes": PAYLOAD_CAP})
    # Run by hand, not by the fixture: the failure this shows ends the worker's run with an error.
    worker = OrderWorker(settings.model_copy(update={"worker": capped}), max_jobs=4)
    run = asyncio.create_task(worker.async_run())
    try:
        await poll_until(lambda: worker.ctx.get("sessionmaker") is not None, "worker startup")
        unknown_ids = list(range(100_000, 100_200))  # payload under the cap; the result echoes it
        data = envelope("compute_batch_totals", {"order_ids": unknown_ids, "batch_id": "big"})
        assert len(data) < PAYLOAD_CAP
        job_id = await produce_bytes(redis, queue_name, data)

        async def finished_or_dead() -> bool:
            return run.done() or bool(await redis.exists(f"arq:result:{job_id}"))

        await poll_until(finished_or_dead, "the big result or the worker's end", timeout_s=10)
        assert not run.done()
        assert (await succeeded(redis, job_id))["missing"] == unknown_ids
    finally:
        if not run.done():
            worker.request_stop(signal.SIGTERM)
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(run, 30)
        await worker.close()


async def test_a_job_id_that_is_not_utf8_is_dropped_and_the_worker_keeps_running(
    seeded: None, start_worker: StartWorker, redis: Redis, queue_name: str
) -> None:
    bad_id = b"raw-\xff\xfe"  # any producer can write one; nothing can name it as text
    await redis.set(b"arq:job:" + bad_id, envelope("compute_order_total", {"order_id": 1}))
    await redis.zadd(queue_name, {bad_id: now_ms()})
    depth = await read_queue_depth(redis, queue_name)  # as status and the metrics read it
    assert depth.ready == 1

    worker = await start_worker()
    after = await produce(redis, queue_name, "compute_order_total", order_id=1)
    assert await succeeded(redis, after) == {"order_id": 1, "total": "30.00"}

    async def dropped() -> bool:
        return await redis.zscore(queue_name, bad_id) is None

    await poll_until(dropped, "the id dropped from the queue")
    assert not await redis.exists(b"arq:job:" + bad_id, b"arq:in-progress:" + bad_id)
    assert worker.main_task is not None and not worker.main_task.done()
