"""Batch totals from the producer's side: chunking, chunk job ids, and the summary of results."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from arq import ArqRedis
from arq.constants import job_key_prefix
from redis.exceptions import ConnectionError as RedisConnectionError

from jobs.batches import (
    BatchRun,
    BatchSummary,
    ResultsUnreachableError,
    chunk_job_id,
    chunked,
)
from jobs.client import OrderClient
from jobs.lanes import lane_queue
from jobs.notices import Watch
from tests.unit.conftest import UNIT_QUEUE, store_result

UNIT_BATCH_LANE = lane_queue(UNIT_QUEUE, "batch")


@pytest.fixture(autouse=True)
async def _listener_closed(order_client: OrderClient) -> AsyncIterator[None]:
    yield
    await order_client.notices.close()  # a wait started the client's done listener


def chunk_result(computed: int, total_sum: str, missing: list[int] | None = None) -> dict[str, Any]:
    return {"batch_id": "b", "computed": computed, "missing": missing or [], "total_sum": total_sum}


def test_chunked_splits_ids_into_full_chunks_and_a_remainder() -> None:
    assert list(chunked(range(1, 8), 3)) == [[1, 2, 3], [4, 5, 6], [7]]
    assert list(chunked(range(1, 7), 3)) == [[1, 2, 3], [4, 5, 6]]
    assert list(chunked([5], 1000)) == [[5]]
    assert list(chunked([], 3)) == []


def test_chunked_is_lazy_over_an_endless_source() -> None:
    first_two = list(itertools.islice(chunked(itertools.count(1), 2), 2))
    assert first_two == [[1, 2], [3, 4]]


def test_chunk_job_ids_are_deterministic_per_batch_and_index() -> None:
    assert chunk_job_id("b1", 0) == "totals:b1:0"
    assert chunk_job_id("b1", 12) == chunk_job_id("b1", 12)
    assert len({chunk_job_id("b1", 1), chunk_job_id("b2", 1), chunk_job_id("b1", 2)}) == 3


async def test_submit_enqueues_one_job_per_chunk_under_its_chunk_id(
    order_client: OrderClient, fake_redis: ArqRedis
) -> None:
    run = BatchRun(order_client, batch_id="b1")
    await run.submit_chunks(chunked([1, 2, 3, 4, 5], 2))
    assert (run.summary.jobs, run.summary.requested) == (3, 5)
    queued = await fake_redis.zrange(UNIT_BATCH_LANE, 0, -1)
    assert sorted(queued) == [b"totals:b1:0", b"totals:b1:1", b"totals:b1:2"]
    data = await fake_redis.get(job_key_prefix + "totals:b1:2")
    assert data is not None
    envelope = json.loads(data)
    assert envelope["f"] == "compute_batch_totals"
    assert envelope["k"] == {"order_ids": [5], "batch_id": "b1"}


async def test_submit_pages_numbers_chunks_across_enqueue_groups(
    order_client: OrderClient, fake_redis: ArqRedis
) -> None:
    async def pages() -> AsyncIterator[list[int]]:
        for start in range(1, 1201, 10):
            yield list(range(start, start + 10))

    run = BatchRun(order_client, batch_id="paged")
    await run.submit_pages(pages())
    assert (run.summary.jobs, run.summary.requested) == (120, 1200)
    assert await fake_redis.zcard(UNIT_BATCH_LANE) == 120
    assert await fake_redis.exists(job_key_prefix + chunk_job_id("paged", 119))


async def test_submit_pages_enqueues_the_first_page_before_reading_the_second(
    order_client: OrderClient, fake_redis: ArqRedis
) -> None:
    queued_at_second_page: list[int] = []

    async def pages() -> AsyncIterator[list[int]]:
        yield [1, 2, 3]
        queued_at_second_page.append(await fake_redis.zcard(UNIT_BATCH_LANE))
        yield [4, 5, 6]

    run = BatchRun(order_client, batch_id="early")
    await run.submit_pages(pages())
    assert queued_at_second_page == [1]  # replicas start on it while the rest is paged
    assert await fake_redis.zcard(UNIT_BATCH_LANE) == 2


async def test_a_new_batch_gets_a_fresh_id(order_client: OrderClient) -> None:
    first, second = BatchRun(order_client), BatchRun(order_client)
    assert first.summary.batch_id != second.summary.batch_id


async def test_the_summary_adds_up_chunk_results_as_decimal(
    order_client: OrderClient, fake_redis: ArqRedis
) -> None:
    run = BatchRun(order_client, batch_id="b1")
    await run.submit_chunks([[1, 2], [3, 4], [5, 6]])
    await store_result(fake_redis, "totals:b1:0", chunk_result(2, "0.10"))
    await store_result(fake_redis, "totals:b1:1", chunk_result(1, "0.20", missing=[4]))
    error = {"code": "retries_exhausted", "message": "gave up after 5 tries"}
    await store_result(fake_redis, "totals:b1:2", error, success=False)
    seen: list[int] = []
    await run.wait(progress=lambda summary: seen.append(summary.finished_jobs), timeout_s=5)
    summary = run.summary
    assert summary.total_sum == Decimal("0.30")
    assert (summary.computed, summary.missing, summary.finished_jobs) == (3, [4], 3)
    assert summary.failed == [{"order_ids": [5, 6], "error": error}]
    assert summary.ok is False
    assert seen == [3]
    assert summary.as_json() == {
        "batch_id": "b1",
        "state": "failed",
        "requested": 6,
        "computed": 3,
        "missing": [4],
        "failed": [{"order_ids": [5, 6], "error": error}],
        "total_sum": "0.30",
    }


async def test_a_failed_large_chunk_is_reported_by_job_id(
    order_client: OrderClient, fake_redis: ArqRedis
) -> None:
    run = BatchRun(order_client, batch_id="big")
    await run.submit_chunks([list(range(1, 202))])
    error = {"code": "internal_error", "message": "boom"}
    await store_result(fake_redis, "totals:big:0", error, success=False)
    await run.wait(timeout_s=5)
    assert run.summary.failed == [{"job_id": "totals:big:0", "error": error}]
    assert run.summary.requested == 201


async def test_wait_marks_unfinished_chunks_as_timed_out(
    order_client: OrderClient, fake_redis: ArqRedis
) -> None:
    run = BatchRun(order_client, batch_id="slow")
    await run.submit_chunks([[1], [2], [3]])
    await store_result(fake_redis, "totals:slow:1", chunk_result(1, "12.00"))
    await run.wait(timeout_s=0.01)
    summary = run.summary
    assert summary.total_sum == Decimal("12.00")
    assert summary.computed == 1
    timeout = {"code": "timeout", "message": "not finished"}
    assert summary.failed == [
        {"job_id": "totals:slow:0", "error": timeout},
        {"job_id": "totals:slow:2", "error": timeout},
    ]
    assert summary.as_json()["total_sum"] == "12.00"
    assert summary.state == "running"  # not done: the unfinished chunks may still finish


async def test_an_all_good_batch_sums_sorted_missing_and_two_decimals(
    order_client: OrderClient, fake_redis: ArqRedis
) -> None:
    run = BatchRun(order_client, batch_id="ok")
    await run.submit_chunks([[1, 9], [2, 8]])
    await store_result(fake_redis, "totals:ok:0", chunk_result(1, "30.00", missing=[9]))
    await store_result(fake_redis, "totals:ok:1", chunk_result(1, "12", missing=[8]))
    await run.wait(timeout_s=5)
    assert run.summary.ok
    assert run.summary.state == "done"
    assert run.summary.as_json()["missing"] == [8, 9]
    assert run.summary.as_json()["total_sum"] == "42.00"
    assert run.summary.total_sum == Decimal("42.00")


def test_an_empty_summary_is_zero_with_two_decimals() -> None:
    assert BatchSummary(batch_id="none").as_json() == {
        "batch_id": "none",
        "state": "queued",
        "requested": 0,
        "computed": 0,
        "missing": [],
        "failed": [],
        "total_sum": "0.00",
    }


async def test_waiting_on_an_empty_batch_returns_at_once(order_client: OrderClient) -> None:
    run = BatchRun(order_client, batch_id="empty")
    await run.submit_chunks([])
    await run.wait()
    assert run.summary.ok
    assert run.summary.finished_jobs == 0


async def unreachable(job_ids: list[str]) -> dict[str, Any]:
    """`OrderClient.outcomes` with Redis down: nothing to read sends no command, so cannot fail."""
    if not job_ids:
        return {}
    raise RedisConnectionError("Connection refused")


async def test_wait_gives_up_once_redis_stays_unreachable_past_the_bound(
    order_client: OrderClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = BatchRun(order_client, batch_id="cut-off")
    await run.submit_chunks([[1], [2]])
    monkeypatch.setattr(order_client, "outcomes", unreachable)
    started = time.monotonic()
    with pytest.raises(ResultsUnreachableError, match="cut-off"):
        await run.wait(timeout_s=30, unreachable_s=0.3)
    assert time.monotonic() - started < 5  # the bound, not the timeout, ended the wait
    assert run.summary.failed == []  # nothing is claimed about chunks it could not read


async def test_reads_of_nothing_do_not_reset_the_unreachable_bound(
    order_client: OrderClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = BatchRun(order_client, batch_id="early-wakeups")
    await run.submit_chunks([[1], [2]])

    async def early_wakeup(self: Watch, timeout_s: float) -> None:
        await asyncio.sleep(0.01)  # a timer may fire before the fallback read is due

    monkeypatch.setattr(order_client, "outcomes", unreachable)
    monkeypatch.setattr(Watch, "wait", early_wakeup)
    started = time.monotonic()
    with pytest.raises(ResultsUnreachableError, match="early-wakeups"):
        await run.wait(timeout_s=10, unreachable_s=0.3)
    assert time.monotonic() - started < 5  # the bound ended the wait, not the timeout


async def test_a_redis_blip_shorter_than_the_bound_is_waited_out(
    order_client: OrderClient, fake_redis: ArqRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = BatchRun(order_client, batch_id="blip")
    await run.submit_chunks([[1]])
    failures = iter([True, True])
    read = order_client.outcomes

    async def flaky(job_ids: list[str]) -> dict[str, Any]:
        if next(failures, False):
            raise RedisConnectionError("Connection refused")
        return await read(job_ids)

    monkeypatch.setattr(order_client, "outcomes", flaky)
    await store_result(fake_redis, "totals:blip:0", chunk_result(1, "30.00"))
    await run.wait(timeout_s=30, unreachable_s=10)
    assert (run.summary.state, run.summary.computed) == ("done", 1)
