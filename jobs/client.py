"""The producer client: enqueue jobs as JSON envelopes and read their results.

Used by the CLI; upstream Python services can import it. Other languages write the same JSON.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from arq import ArqRedis, create_pool
from arq.connections import RedisSettings
from arq.constants import job_key_prefix, result_key_prefix, retry_key_prefix

from jobs.serialization import decode_result, deserialize, serialize

DEFAULT_QUEUE = "arq:queue"
JOB_EXPIRY_MS = 24 * 3600 * 1000  # as arq: an unstarted job is dropped after a day
PIPELINE_BATCH = 500


@dataclass(frozen=True, slots=True)
class JobOutcome:
    job_id: str
    success: bool
    # The job's result on success; `{"code", "message"}` on failure.
    result: dict[str, Any]


@dataclass(frozen=True, slots=True)
class JobRequest:
    function: str
    kwargs: dict[str, Any]
    job_id: str


class OrderClient:
    def __init__(self, redis: ArqRedis, queue_name: str = DEFAULT_QUEUE) -> None:
        self.redis = redis
        self.queue_name = queue_name

    @classmethod
    async def connect(cls, settings: RedisSettings, queue_name: str = DEFAULT_QUEUE) -> OrderClient:
        redis = await create_pool(
            settings,
            job_serializer=serialize,
            job_deserializer=deserialize,
            default_queue_name=queue_name,
        )
        return cls(redis, queue_name)

    async def close(self) -> None:
        await self.redis.aclose()

    async def enqueue(self, function: str, job_id: str | None = None, **kwargs: Any) -> str:
        """Enqueue one job; returns its id. An id that is already queued is not enqueued twice."""
        job = await self.redis.enqueue_job(
            function, _job_id=job_id, _queue_name=self.queue_name, **kwargs
        )
        if job is None:
            raise ValueError(f"a job with id {job_id!r} is already queued or has a result")
        return job.job_id

    async def place_order(
        self, customer_id: int, items: Sequence[dict[str, int]], idempotency_key: str | None = None
    ) -> str:
        return await self.enqueue(
            "place_order",
            customer_id=customer_id,
            items=list(items),
            idempotency_key=idempotency_key,
        )

    async def compute_order_total(self, order_id: int) -> str:
        return await self.enqueue("compute_order_total", order_id=order_id)

    async def enqueue_many(self, requests: Iterable[JobRequest]) -> int:
        """Pipelined enqueue: one round trip per few hundred jobs instead of three per job."""
        count = 0
        pending: list[JobRequest] = []
        for request in requests:
            pending.append(request)
            if len(pending) >= PIPELINE_BATCH:
                count += await self._write(pending)
                pending = []
        if pending:
            count += await self._write(pending)
        return count

    async def _write(self, requests: Sequence[JobRequest]) -> int:
        now_ms = int(time.time() * 1000)
        async with self.redis.pipeline(transaction=False) as pipe:
            for request in requests:
                envelope: dict[str, Any] = {
                    "t": None,
                    "f": request.function,
                    "a": [],
                    "k": request.kwargs,
                    "et": now_ms,
                }
                pipe.psetex(job_key_prefix + request.job_id, JOB_EXPIRY_MS, serialize(envelope))
                # An id enqueued again starts afresh: not answered by its previous run's result,
                # nor refused for the tries its previous run used up.
                pipe.delete(result_key_prefix + request.job_id, retry_key_prefix + request.job_id)
            pipe.zadd(self.queue_name, {request.job_id: now_ms for request in requests})
            await pipe.execute()
        return len(requests)

    async def outcomes(self, job_ids: Sequence[str]) -> dict[str, JobOutcome]:
        """Results of the finished jobs among `job_ids` (unfinished ones are left out)."""
        found: dict[str, JobOutcome] = {}
        for start in range(0, len(job_ids), PIPELINE_BATCH):
            batch = job_ids[start : start + PIPELINE_BATCH]
            async with self.redis.pipeline(transaction=False) as pipe:
                for job_id in batch:
                    pipe.get(result_key_prefix + job_id)
                stored = await pipe.execute()
            for job_id, data in zip(batch, stored, strict=True):
                if data is not None:
                    found[job_id] = outcome_from_result(job_id, data)
        return found

    async def wait(self, job_id: str, timeout_s: float, poll_s: float = 0.05) -> JobOutcome:
        deadline = time.monotonic() + timeout_s
        while True:
            found = await self.outcomes([job_id])
            if job_id in found:
                return found[job_id]
            if time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} did not finish within {timeout_s:g}s")
            await asyncio.sleep(poll_s)


def outcome_from_result(job_id: str, data: bytes) -> JobOutcome:
    try:
        stored = decode_result(data)
        success = bool(stored["s"])
        result = stored["r"]
    except (ValueError, KeyError, TypeError) as error:
        return JobOutcome(job_id, False, {"code": "undecodable_result", "message": str(error)})
    if not isinstance(result, dict):
        result = {"code": "job_failed", "message": str(result)}
    return JobOutcome(job_id, success, result)


def new_batch_id() -> str:
    return uuid.uuid4().hex
