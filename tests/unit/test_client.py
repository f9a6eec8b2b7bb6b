"""The producer client against fakeredis: the bytes it writes and how it reads results back."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import pytest
from arq import ArqRedis
from arq.constants import job_key_prefix, result_key_prefix
from arq.jobs import Job, JobStatus

from jobs.client import JOB_EXPIRY_MS, PIPELINE_BATCH, JobOutcome, JobRequest, OrderClient
from jobs.lanes import lane_queue
from jobs.serialization import deserialize
from tests.unit.conftest import UNIT_QUEUE, result_bytes, store_result

UNIT_BATCH_LANE = lane_queue(UNIT_QUEUE, "batch")


@pytest.fixture(autouse=True)
async def _listener_closed(order_client: OrderClient) -> AsyncIterator[None]:
    yield
    await order_client.notices.close()  # a wait started the client's done listener


def totals_request(job_id: str, *order_ids: int) -> JobRequest:
    return JobRequest("compute_batch_totals", {"order_ids": list(order_ids)}, job_id)


async def test_enqueue_many_writes_json_envelopes_with_a_ttl_and_queues_them(
    order_client: OrderClient, fake_redis: ArqRedis
) -> None:
    before_ms = int(time.time() * 1000)
    requests = [totals_request("a", 1, 2), totals_request("b", 3)]
    assert await order_client.enqueue_many(requests) == 2
    for request in requests:
        data = await fake_redis.get(job_key_prefix + request.job_id)
        assert data is not None
        envelope = json.loads(data.decode("utf-8"))
        assert envelope.keys() == {"t", "f", "a", "k", "et"}
        assert (envelope["t"], envelope["f"], envelope["a"]) == (None, "compute_batch_totals", [])
        assert envelope["k"] == request.kwargs
        assert before_ms <= envelope["et"] <= int(time.time() * 1000)
        assert 0 < await fake_redis.pttl(job_key_prefix + request.job_id) <= JOB_EXPIRY_MS
        assert await fake_redis.zscore(UNIT_BATCH_LANE, request.job_id) == envelope["et"]


async def test_arq_sees_the_enqueued_jobs_as_queued(
    order_client: OrderClient, fake_redis: ArqRedis
) -> None:
    await order_client.enqueue_many([totals_request("a", 1, 2)])
    job = Job("a", fake_redis, _queue_name=UNIT_BATCH_LANE, _deserializer=deserialize)
    assert await job.status() == JobStatus.queued
    info = await job.info()
    assert info is not None
    assert (info.function, info.kwargs) == ("compute_batch_totals", {"order_ids": [1, 2]})


async def test_enqueue_many_flushes_in_batches_and_accepts_a_generator(
    order_client: OrderClient, fake_redis: ArqRedis
) -> None:
    count = 2 * PIPELINE_BATCH + 7
    written = await order_client.enqueue_many(
        totals_request(f"job-{index}", index) for index in range(count)
    )
    assert written == count
    assert await fake_redis.zcard(UNIT_BATCH_LANE) == count
    assert await fake_redis.exists(job_key_prefix + f"job-{count - 1}")


async def test_enqueue_many_of_nothing_writes_nothing(
    order_client: OrderClient, fake_redis: ArqRedis
) -> None:
    assert await order_client.enqueue_many([]) == 0
    assert await fake_redis.zcard(UNIT_QUEUE) == 0


async def test_enqueue_writes_json_and_refuses_a_queued_id(
    order_client: OrderClient, fake_redis: ArqRedis
) -> None:
    job_id = await order_client.place_order(1, [{"item_id": 2, "quantity": 4}], "key-1")
    data = await fake_redis.get(job_key_prefix + job_id)
    assert data is not None
    assert json.loads(data)["k"] == {
        "customer_id": 1,
        "items": [{"item_id": 2, "quantity": 4}],
        "idempotency_key": "key-1",
    }
    assert await order_client.enqueue("compute_order_total", job_id="fixed", order_id=1) == "fixed"
    with pytest.raises(ValueError, match="'fixed' is already queued"):
        await order_client.enqueue("compute_order_total", job_id="fixed", order_id=1)


async def test_outcomes_decode_successes_and_failures_and_skip_unfinished_jobs(
    order_client: OrderClient, fake_redis: ArqRedis
) -> None:
    await store_result(fake_redis, "done", {"order_id": 1, "total": "30.00"})
    failure = {"code": "unknown_order", "message": "order 9 does not exist"}
    await store_result(fake_redis, "failed", failure, success=False)
    found = await order_client.outcomes(["done", "failed", "running"])
    assert found == {
        "done": JobOutcome("done", True, {"order_id": 1, "total": "30.00"}),
        "failed": JobOutcome("failed", False, failure),
    }


async def test_a_result_that_is_not_a_document_becomes_job_failed(
    order_client: OrderClient, fake_redis: ArqRedis
) -> None:
    await store_result(fake_redis, "odd", "unable to serialize result", success=False)
    found = await order_client.outcomes(["odd"])
    assert found["odd"] == JobOutcome(
        "odd", False, {"code": "job_failed", "message": "unable to serialize result"}
    )


@pytest.mark.parametrize(
    ("data", "mentions"),
    [
        (b"\x80\x04\x95garbage", "pickle"),
        (b"\xff\xfe\x00", "UTF-8"),
        (result_bytes({"order_id": 1})[:-2], "JSON"),
        (b'{"t":1,"f":"x","a":[],"k":{},"et":1}', "'s'"),
    ],
)
async def test_an_undecodable_result_is_reported_not_raised(
    order_client: OrderClient, fake_redis: ArqRedis, data: bytes, mentions: str
) -> None:
    await fake_redis.set(result_key_prefix + "bad", data)
    outcome = (await order_client.outcomes(["bad"]))["bad"]
    assert outcome.success is False
    assert outcome.result["code"] == "undecodable_result"
    assert mentions in outcome.result["message"]


async def test_outcomes_read_more_ids_than_one_pipeline_holds(
    order_client: OrderClient, fake_redis: ArqRedis
) -> None:
    job_ids = [f"job-{index}" for index in range(PIPELINE_BATCH + 50)]
    for job_id in job_ids[::100]:
        await store_result(fake_redis, job_id, {"job": job_id})
    found = await order_client.outcomes(job_ids)
    assert sorted(found) == sorted(job_ids[::100])
    assert all(found[job_id].result == {"job": job_id} for job_id in found)


async def test_wait_returns_a_finished_outcome(
    order_client: OrderClient, fake_redis: ArqRedis
) -> None:
    await store_result(fake_redis, "done", {"order_id": 2, "total": "12.00"})
    outcome = await order_client.wait("done", timeout_s=1)
    assert outcome == JobOutcome("done", True, {"order_id": 2, "total": "12.00"})


async def test_wait_gives_up_after_its_deadline(order_client: OrderClient) -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"job never did not finish within 0\.05s"):
        await order_client.wait("never", timeout_s=0.05)
    assert 0.05 <= time.monotonic() - started < 2
