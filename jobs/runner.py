"""Wraps each job: validates its payload, classifies failures, retries transient ones with backoff,
records the ones that fail for good as dead letters, and logs one summary line per run."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import structlog
from arq import Retry
from pydantic import BaseModel

from jobs.context import JobContext, JobPolicy
from jobs.errors import InvalidPayloadError, JobError, RetriesExhaustedError, describe, is_transient
from jobs.validation import validated

log = structlog.get_logger("orderworker.jobs")

PayloadT = TypeVar("PayloadT", bound=BaseModel)
JobBody = Callable[[JobContext, PayloadT], Awaitable[BaseModel]]
JobEntry = Callable[..., Coroutine[Any, Any, dict[str, Any]]]


def backoff_delay(policy: JobPolicy, job_try: int) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2^(try-1))]."""
    ceiling = min(policy.retry_max_delay_s, policy.retry_base_delay_s * 2 ** (job_try - 1))
    return random.uniform(0, ceiling)


def validated_payload(
    payload_model: type[PayloadT], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> PayloadT:
    if args:
        raise InvalidPayloadError("positional arguments are not accepted; use keywords")
    return validated(payload_model, kwargs)


def batch_fields(job_ctx: JobContext, payload: BaseModel) -> dict[str, str]:
    """A chunk job's lines name its batch: the one it was sent in, or itself alone (as its
    result does). Bound in the job's own task, so concurrent jobs never see each other's."""
    if "batch_id" not in type(payload).model_fields:
        return {}
    return {"batch_id": getattr(payload, "batch_id", None) or job_ctx["job_id"]}


def job_entry(name: str, payload_model: type[PayloadT], body: JobBody[PayloadT]) -> JobEntry:
    """The coroutine arq calls: keyword arguments in, a JSON-ready result dict out."""

    async def entry(job_ctx: JobContext, *args: Any, **kwargs: Any) -> dict[str, Any]:
        policy = job_ctx["policy"]
        started = time.perf_counter()
        structlog.contextvars.bind_contextvars(
            job_id=job_ctx["job_id"], job=name, job_try=job_ctx["job_try"]
        )
        try:
            payload = validated_payload(payload_model, args, kwargs)
            structlog.contextvars.bind_contextvars(**batch_fields(job_ctx, payload))
            async with asyncio.timeout(policy.job_timeout_s):
                result = await body(job_ctx, payload)
        except JobError as error:
            log.warning("job.failed", **describe(error), duration_ms=_ms_since(started))
            await job_ctx["dead_letters"].record_job_failure(job_ctx, name, error)
            raise
        except Exception as error:
            if not is_transient(error):
                log.exception("job.crashed", **describe(error), duration_ms=_ms_since(started))
                await job_ctx["dead_letters"].record_job_failure(job_ctx, name, error)
                raise
            if job_ctx["job_try"] >= policy.max_tries:
                log.warning("job.gave_up", **describe(error), duration_ms=_ms_since(started))
                exhausted = RetriesExhaustedError(
                    f"gave up after {job_ctx['job_try']} tries: {describe(error)['message']}"
                )
                await job_ctx["dead_letters"].record_job_failure(job_ctx, name, exhausted)
                raise exhausted from error
            delay = backoff_delay(policy, job_ctx["job_try"])
            log.warning(
                "job.retrying",
                **describe(error),
                retry_in_s=round(delay, 3),
                duration_ms=_ms_since(started),
            )
            raise Retry(defer=delay) from error
        else:
            log.info("job.done", duration_ms=_ms_since(started))
            return result.model_dump(mode="json")
        finally:
            structlog.contextvars.unbind_contextvars("job_id", "job", "job_try", "batch_id")

    entry.__name__ = entry.__qualname__ = name
    return entry


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)
