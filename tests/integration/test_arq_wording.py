"""arq's wording, produced by arq itself: the failures it decides (expired, unknown function, max
tries exceeded, its own timeout, a payload it cannot decode) get our codes and dead letters; its
line for each failure it decides is read as one `job.failed` line, and its line for a failed job is
the one the log filter drops. If an arq upgrade changes a text, these fail."""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

import pytest
from arq.constants import job_key_prefix, retry_key_prefix
from arq.worker import Function
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.failed_jobs import list_failures
from jobs.client import JobOutcome, OrderClient
from tests.conftest import StartWorker, poll_until
from worker.arq_seam.wording import arq_job_failure_fields, is_arq_job_failure_line
from worker.settings import Settings

Sessions = async_sessionmaker[AsyncSession]
WAIT_S = 15.0


def envelope(function: str, **kwargs: Any) -> bytes:
    document = {"t": 1, "f": function, "a": [], "k": kwargs, "et": int(time.time() * 1000)}
    return json.dumps(document, separators=(",", ":")).encode()


async def dead_letter(sessionmaker: Sessions, job_id: str) -> tuple[str, str, str, int]:
    async def recorded() -> bool:
        async with sessionmaker() as session:
            return bool(await list_failures(session, job_ids=[job_id]))

    await poll_until(recorded, f"dead letter of {job_id}")
    async with sessionmaker() as session:
        (row,) = await list_failures(session, job_ids=[job_id])
    return row.function, row.error_code, row.error_message, row.tries


def arq_line_fields(caplog: pytest.LogCaptureFixture, job_id: str) -> dict[str, Any] | None:
    """How the log filter reshapes arq's one line about the job."""
    [record] = [
        record
        for record in caplog.records
        if record.name.startswith("arq.") and job_id in record.getMessage()
    ]
    return arq_job_failure_fields(record)


async def run_raw(
    client: OrderClient, redis: Redis, caplog: pytest.LogCaptureFixture, data: bytes | None
) -> tuple[str, JobOutcome]:
    """Queue a job as raw bytes (none: only its id) and wait for its outcome, arq's lines kept."""
    job_id = f"raw-{uuid.uuid4().hex}"
    with caplog.at_level(logging.WARNING, logger="arq.worker"):
        if data is not None:
            await redis.set(job_key_prefix + job_id, data, px=60_000)
        await redis.zadd(client.queue_name, {job_id: int(time.time() * 1000)})
        return job_id, await client.wait(job_id, WAIT_S)


async def test_a_job_whose_envelope_expired(
    start_worker: StartWorker,
    client: OrderClient,
    redis: Redis,
    sessionmaker: Sessions,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await start_worker()
    job_id, outcome = await run_raw(client, redis, caplog, None)  # no arq:job:<id>
    assert outcome.result == {"code": "expired", "message": "job expired"}
    assert await dead_letter(sessionmaker, job_id) == ("<unknown>", "expired", "job expired", 1)
    assert arq_line_fields(caplog, job_id) == {
        "job_id": job_id,
        "code": "expired",
        "message": "job expired",
    }


async def test_a_job_for_an_unknown_function(
    start_worker: StartWorker,
    client: OrderClient,
    redis: Redis,
    sessionmaker: Sessions,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await start_worker()
    job_id, outcome = await run_raw(client, redis, caplog, envelope("nope"))
    message = "function 'nope' not found"
    assert outcome.result == {"code": "unknown_function", "message": message}
    assert await dead_letter(sessionmaker, job_id) == ("nope", "unknown_function", message, 1)
    assert arq_line_fields(caplog, job_id) == {
        "job_id": job_id,
        "job": "nope",
        "code": "unknown_function",
        "message": message,
    }


async def test_a_job_whose_payload_cannot_be_decoded(
    start_worker: StartWorker, client: OrderClient, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    await start_worker()
    job_id, outcome = await run_raw(client, redis, caplog, b"{not json")
    assert outcome.result is not None and outcome.result["code"] == "undecodable_payload"
    fields = arq_line_fields(caplog, job_id)
    assert fields == {
        "job_id": job_id,
        "error_type": "DeserializationError",
        "code": "undecodable_payload",
        "message": outcome.result["message"],
    }
    assert "not valid JSON" in fields["message"]


async def test_a_job_past_its_tries(
    seeded: None,
    settings: Settings,
    start_worker: StartWorker,
    client: OrderClient,
    redis: Redis,
    sessionmaker: Sessions,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await start_worker()
    max_tries = settings.worker.max_tries
    job_id = f"tried-{uuid.uuid4().hex}"
    await redis.set(retry_key_prefix + job_id, str(max_tries), px=60_000)  # every try used
    await redis.set(job_key_prefix + job_id, envelope("compute_order_total", order_id=1))
    await redis.zadd(client.queue_name, {job_id: int(time.time() * 1000)})
    with caplog.at_level(logging.WARNING, logger="arq.worker"):
        outcome = await client.wait(job_id, WAIT_S)
    message = f"max {max_tries} retries exceeded"
    assert outcome.result == {"code": "retries_exhausted", "message": message}
    assert await dead_letter(sessionmaker, job_id) == (
        "compute_order_total",
        "retries_exhausted",
        message,
        max_tries + 1,
    )
    assert arq_line_fields(caplog, job_id) == {
        "job_id": job_id,
        "job": "compute_order_total",
        "code": "retries_exhausted",
        "message": message,
    }


async def test_arqs_own_timeout_is_recorded_and_its_log_line_recognised(
    seeded: None,
    start_worker: StartWorker,
    client: OrderClient,
    sessionmaker: Sessions,
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker = await start_worker()
    warm = await client.wait(await client.compute_order_total(1), WAIT_S)  # its totals row
    assert warm.success
    function = worker.functions["compute_order_total"]
    assert isinstance(function, Function)
    function.timeout_s = 0.3  # arq's timeout, well before the job's own (retryable) one
    with caplog.at_level(logging.ERROR, logger="arq.worker"):
        async with sessionmaker.begin() as session:  # hold the row the job must update
            await session.execute(text("SELECT 1 FROM order_totals WHERE order_id = 1 FOR UPDATE"))
            job_id = await client.compute_order_total(1)
            outcome = await client.wait(job_id, WAIT_S)
    assert outcome.result == {"code": "internal_error", "message": "TimeoutError: "}
    assert await dead_letter(sessionmaker, job_id) == (
        "compute_order_total",
        "internal_error",
        "TimeoutError: ",
        1,
    )
    failures = [record for record in caplog.records if job_id in record.getMessage()]
    assert failures, "arq logged no failure line for the job"
    assert all(is_arq_job_failure_line(record) for record in failures)
