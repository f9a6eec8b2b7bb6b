"""The producer client: enqueue jobs as JSON envelopes and read their results.

Used by the CLI; upstream Python services can import it. Other languages write the same JSON.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from arq import ArqRedis, create_pool
from arq.connections import RedisSettings
from arq.constants import job_key_prefix, result_key_prefix, retry_key_prefix
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from jobs.connection import close_sentinels
from jobs.lanes import done_channel, lane_of, lane_queue, wake_channel
from jobs.notices import FALLBACK_READ_S, DoneNotices, Watch
from jobs.serialization import decode_result, deserialize, serialize

DEFAULT_QUEUE = "arq:queue"
JOB_EXPIRY_MS = 24 * 3600 * 1000  # as arq: an unstarted job is dropped after a day
PIPELINE_BATCH = 500
DEFAULT_WAIT_TIMEOUT_MS = 1000
WAKE = b"1"  # the wake channel's payload is never read
# arq's enqueue_job (WATCH, EXISTS, then MULTI/PSETEX/ZADD/EXEC: three round trips) plus the
# wake-up, as one command: KEYS the job, result and lane keys; ARGV the TTL in ms, envelope, job
# id, score, wake channel and payload. 0: already queued or finished, nothing written.
ENQUEUE_SCRIPT = """
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then return 0 end
redis.call('PSETEX', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
redis.call('PUBLISH', ARGV[5], ARGV[6])
return 1
"""


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


class NotReplicatedError(RedisError):
    """Fewer replicas than asked acknowledged an enqueue in time: it may not survive a failover
    (the primary holds it, and may still replicate it; enqueue the same job id again to know)."""


@dataclass(frozen=True, slots=True)
class Replication:
    """Replicas that must acknowledge each enqueue (Redis `WAIT`) within `timeout_ms` before it
    returns; 0 (the default) returns once the primary has it."""

    replicas_to_wait: int = 0
    wait_timeout_ms: int = DEFAULT_WAIT_TIMEOUT_MS


class OrderClient:
    def __init__(
        self,
        redis: ArqRedis,
        queue_name: str = DEFAULT_QUEUE,
        replication: Replication | None = None,
    ) -> None:
        self.redis = redis
        self.queue_name = queue_name
        self.notices = DoneNotices(redis, done_channel(queue_name))
        self._enqueue_script: AsyncScript = redis.register_script(ENQUEUE_SCRIPT)
        replication = replication or Replication()
        self.replicas_to_wait = replication.replicas_to_wait
        self.wait_timeout_ms = replication.wait_timeout_ms

    @classmethod
    async def connect(
        cls,
        settings: RedisSettings,
        queue_name: str = DEFAULT_QUEUE,
        replication: Replication | None = None,
    ) -> OrderClient:
        redis = await create_pool(
            settings,
            job_serializer=serialize,
            job_deserializer=deserialize,
            default_queue_name=queue_name,
        )
        return cls(redis, queue_name, replication)

    async def close(self) -> None:
        await self.notices.close()
        await self.redis.aclose()
        await close_sentinels(self.redis)

    def lane_queue_of(self, function: str) -> str:
        """The sorted set this client writes a `function` job into."""
        return lane_queue(self.queue_name, lane_of(function))

    async def enqueue(self, function: str, job_id: str | None = None, **kwargs: Any) -> str:
        """Enqueue one job; returns its id. An id that is already queued is not enqueued twice."""
        job_id = job_id or uuid.uuid4().hex
        now_ms = int(time.time() * 1000)
        keys = [job_key_prefix + job_id, result_key_prefix + job_id, self.lane_queue_of(function)]
        data = envelope(function, kwargs, now_ms)
        wake = wake_channel(self.queue_name)
        args: list[bytes | str | int] = [JOB_EXPIRY_MS, data, job_id, now_ms, wake, WAKE]
        if self.replicas_to_wait:
            written = await self._enqueue_replicated(keys, args)
        else:
            written = await self._enqueue_script(keys=keys, args=args)
        if not written:
            raise already_queued(job_id)
        return job_id

    async def _enqueue_replicated(self, keys: list[str], args: list[bytes | str | int]) -> int:
        """The script, and WAIT right after it on its connection: WAIT covers only its own
        connection's writes, and a retry sends both again together."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.execute_command("EVAL", ENQUEUE_SCRIPT, len(keys), *keys, *args)
            pipe.execute_command("WAIT", self.replicas_to_wait, self.wait_timeout_ms)
            written, acknowledged = await pipe.execute()
        if written:
            self._check_replicated(int(acknowledged))
        return int(written)

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
        lanes: dict[str, dict[str, int]] = {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for request in requests:
                data = envelope(request.function, request.kwargs, now_ms)
                pipe.psetex(job_key_prefix + request.job_id, JOB_EXPIRY_MS, data)
                # An id enqueued again starts afresh: not answered by its previous run's result,
                # nor refused for the tries its previous run used up.
                pipe.delete(result_key_prefix + request.job_id, retry_key_prefix + request.job_id)
                lanes.setdefault(self.lane_queue_of(request.function), {})[request.job_id] = now_ms
            for queue, members in lanes.items():
                pipe.zadd(queue, members)
            pipe.publish(wake_channel(self.queue_name), WAKE)
            if self.replicas_to_wait:  # the writes above, on this connection (a retry resends all)
                pipe.execute_command("WAIT", self.replicas_to_wait, self.wait_timeout_ms)
            replies = await pipe.execute()
        if self.replicas_to_wait:
            self._check_replicated(int(replies[-1]))
        return len(requests)

    def _check_replicated(self, acknowledged: int) -> None:
        if acknowledged < self.replicas_to_wait:
            raise NotReplicatedError(
                f"{acknowledged} of {self.replicas_to_wait} replicas acknowledged the enqueue "
                f"within {self.wait_timeout_ms} ms"
            )

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

    async def unknown(self, job_ids: Sequence[str]) -> list[str]:
        """Those of `job_ids` Redis holds neither as a job nor as a result: never enqueued here,
        expired, or lost with Redis's data. A job keeps its key until its result is stored."""
        missing: list[str] = []
        for start in range(0, len(job_ids), PIPELINE_BATCH):
            batch = job_ids[start : start + PIPELINE_BATCH]
            async with self.redis.pipeline(transaction=False) as pipe:
                for job_id in batch:
                    pipe.exists(job_key_prefix + job_id, result_key_prefix + job_id)
                held = await pipe.execute()
            missing += [job_id for job_id, keys in zip(batch, held, strict=True) if not keys]
        return missing

    async def wait(self, job_id: str, timeout_s: float) -> JobOutcome:
        """The job's outcome once its done notice arrives (or the fallback read finds it)."""
        deadline = time.monotonic() + timeout_s
        with self.notices.watching([job_id]) as watch:
            await self.notices.subscribed(min(FALLBACK_READ_S, timeout_s))
            # Read once now: a result stored before the subscription has no notice left to come.
            return await self._outcome(job_id, watch, deadline, timeout_s, read_now=True)

    async def enqueue_and_wait(
        self, function: str, timeout_s: float, job_id: str | None = None, **kwargs: Any
    ) -> JobOutcome:
        """enqueue() then wait(), watching before the job exists: with the subscription up by
        then, its notice cannot be missed, and its result is read once, when the notice comes."""
        job_id = job_id or uuid.uuid4().hex
        deadline = time.monotonic() + timeout_s
        with self.notices.watching([job_id]) as watch:
            subscribed = await self.notices.subscribed(min(FALLBACK_READ_S, timeout_s))
            watch.drain()  # what the subscribing said concerns no job that does not exist yet
            await self.enqueue(function, job_id, **kwargs)
            return await self._outcome(job_id, watch, deadline, timeout_s, read_now=not subscribed)

    async def _outcome(
        self, job_id: str, watch: Watch, deadline: float, timeout_s: float, *, read_now: bool
    ) -> JobOutcome:
        """Read on each notice for the job (and on resubscribing), at least every fallback period,
        until its result is there or `deadline` passes."""
        while True:
            if read_now:
                watch.drain()  # the read below covers every notice taken so far
                found = await self.outcomes([job_id])
                if job_id in found:
                    return found[job_id]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"job {job_id} did not finish within {timeout_s:g}s")
            await watch.wait(min(FALLBACK_READ_S, remaining))
            read_now = True


def already_queued(job_id: str) -> ValueError:
    return ValueError(f"a job with id {job_id!r} is already queued or has a result")


def envelope(function: str, kwargs: dict[str, Any], enqueued_ms: int) -> bytes:
    """A job as arq's enqueue_job writes it (no args, first try), in JSON."""
    return serialize({"t": None, "f": function, "a": [], "k": kwargs, "et": enqueued_ms})


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
