"""The failure taxonomy (what is retried, what each failure is stored as) and the job wrapper
that applies it: validation, retries with backoff, one summary log line per run."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
import structlog
from arq import Retry
from arq.jobs import DeserializationError
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from structlog.testing import capture_logs
from structlog.typing import EventDict

from db.orders import UnknownItemsError
from jobs.context import JobContext, JobPolicy
from jobs.errors import (
    InvalidPayloadError,
    JobError,
    RetriesExhaustedError,
    UnknownCustomerError,
    UnknownItemError,
    UnknownOrderError,
    describe,
    error_document,
    is_transient,
)
from jobs.models import (
    BatchTotalsResult,
    ComputeBatchTotalsPayload,
    ComputeOrderTotalPayload,
    OrderTotalResult,
    PlaceOrderPayload,
)
from jobs.runner import JobEntry, backoff_delay, job_entry

SUMMARY_EVENTS = {"job.done", "job.failed", "job.retrying", "job.gave_up", "job.crashed"}
POLICY = JobPolicy(
    job_timeout_s=5.0, max_tries=3, retry_base_delay_s=0.5, retry_max_delay_s=4.0, subchunk_size=10
)


class PostgresError(Exception):
    """Stands in for a driver error: what SQLAlchemy keeps as `orig`, carrying a SQLSTATE."""

    def __init__(self, message: str, sqlstate: str | None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def database_error(sqlstate: str | None, kind: type[DBAPIError] = OperationalError) -> DBAPIError:
    return kind("SELECT 1", None, PostgresError("from the server", sqlstate))


@pytest.mark.parametrize(
    "sqlstate", ["40P01", "40001", "57P01", "55P03", "53300", "08006", "08001", None]
)
def test_database_faults_worth_another_try_are_transient(sqlstate: str | None) -> None:
    assert is_transient(database_error(sqlstate))
    assert is_transient(database_error(sqlstate, DBAPIError))


@pytest.mark.parametrize("sqlstate", ["23505", "23503", "42P01", "22P02"])
def test_data_and_programming_errors_are_not_transient(sqlstate: str) -> None:
    assert not is_transient(database_error(sqlstate, IntegrityError))


def test_the_sqlstate_is_found_behind_the_adapter_error() -> None:
    adapted = PostgresError("adapter", None)
    adapted.__cause__ = PostgresError("driver", "23505")
    assert not is_transient(OperationalError("INSERT", None, adapted))
    adapted.__cause__ = PostgresError("driver", "40P01")
    assert is_transient(OperationalError("INSERT", None, adapted))


def test_an_invalidated_connection_is_transient_whatever_the_code() -> None:
    error = OperationalError(
        "SELECT 1", None, PostgresError("gone", "23505"), connection_invalidated=True
    )
    assert is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        PoolTimeoutError("QueuePool limit of size 5 overflow 0 reached"),
        TimeoutError(),
        ConnectionError("reset"),
        ConnectionResetError(),
    ],
)
def test_timeouts_and_lost_connections_are_transient(error: BaseException) -> None:
    assert is_transient(error)


@pytest.mark.parametrize(
    "error", [JobError("no"), UnknownItemError("item 9"), ValueError("bad"), KeyError("k")]
)
def test_job_errors_and_bugs_are_not_transient(error: BaseException) -> None:
    assert not is_transient(error)


def test_a_group_is_transient_only_if_every_member_is() -> None:
    transient = ExceptionGroup("tasks", [ConnectionError(), database_error("40P01")])
    assert is_transient(transient)
    assert is_transient(ExceptionGroup("outer", [transient, TimeoutError()]))
    assert not is_transient(ExceptionGroup("tasks", [ConnectionError(), UnknownOrderError("7")]))
    assert not is_transient(ExceptionGroup("tasks", [TimeoutError(), ValueError("bug")]))


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InvalidPayloadError("order_id: required"), "invalid_payload"),
        (UnknownCustomerError("customer 9 does not exist"), "unknown_customer"),
        (UnknownItemError("items 8, 9 do not exist"), "unknown_item"),
        (UnknownOrderError("order 4 does not exist"), "unknown_order"),
        (RetriesExhaustedError("gave up"), "retries_exhausted"),
        (JobError("custom", code="custom_code"), "custom_code"),
    ],
)
def test_a_job_error_is_its_code_and_message(error: JobError, code: str) -> None:
    assert error_document(error) == {"code": code, "message": error.message}


def test_an_undecodable_payload_reports_the_cause() -> None:
    error = DeserializationError("unable to deserialize job")
    error.__cause__ = ValueError("pickle payloads are refused; send JSON")
    assert error_document(error) == {
        "code": "undecodable_payload",
        "message": "pickle payloads are refused; send JSON",
    }
    assert error_document(DeserializationError("unable to deserialize job")) == {
        "code": "undecodable_payload",
        "message": "unable to deserialize job",
    }


def test_a_group_is_reported_by_its_first_permanent_error() -> None:
    group = ExceptionGroup("tasks", [ConnectionError("reset"), UnknownOrderError("order 4")])
    assert error_document(group) == {"code": "unknown_order", "message": "order 4"}
    transient = ExceptionGroup("tasks", [ConnectionError("reset"), TimeoutError()])
    assert error_document(transient) == {
        "code": "internal_error",
        "message": "ConnectionError: reset",
    }


def test_other_failures_are_internal_errors_or_aborts() -> None:
    assert error_document(ValueError("boom")) == {
        "code": "internal_error",
        "message": "ValueError: boom",
    }
    assert error_document(asyncio.CancelledError())["code"] == "aborted"
    assert describe(UnknownItemError("item 9")) == {
        "error_type": "UnknownItemError",
        "code": "unknown_item",
        "message": "item 9",
    }


class DeadLetterList:
    """Stands in for the replica's dead letters: what the runner asked to record."""

    def __init__(self) -> None:
        self.recorded: list[tuple[str, str, int, dict[str, str]]] = []

    async def record_job_failure(
        self, ctx: JobContext, function: str, error: BaseException
    ) -> None:
        self.recorded.append((ctx["job_id"], function, ctx["job_try"], error_document(error)))


def job_ctx(job_try: int = 1, policy: JobPolicy = POLICY) -> dict[str, Any]:
    return {
        "job_id": "job-1",
        "job_try": job_try,
        "policy": policy,
        "dead_letters": DeadLetterList(),
    }


def recorded(ctx: dict[str, Any]) -> list[tuple[str, str, int, dict[str, str]]]:
    letters: DeadLetterList = ctx["dead_letters"]
    return letters.recorded


async def total_of_thirty(ctx: JobContext, payload: ComputeOrderTotalPayload) -> OrderTotalResult:
    return OrderTotalResult(order_id=payload.order_id, total=Decimal("30"))


def entry_raising(
    error: BaseException, payload_model: type[BaseModel] = ComputeOrderTotalPayload
) -> JobEntry:
    async def body(ctx: JobContext, payload: BaseModel) -> OrderTotalResult:
        raise error

    return job_entry("compute_order_total", payload_model, body)


THIRTY = job_entry("compute_order_total", ComputeOrderTotalPayload, total_of_thirty)


async def run_logged(entry: JobEntry, ctx: dict[str, Any], **kwargs: Any) -> tuple[Any, EventDict]:
    """Run a job; returns what it raised (or returned) and its one summary log line."""
    outcome: Any
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        try:
            outcome = await entry(ctx, **kwargs)
        except BaseException as error:
            outcome = error
    summaries = [entry for entry in logs if entry["event"] in SUMMARY_EVENTS]
    assert len(summaries) == 1, logs
    assert summaries[0]["job_id"] == ctx["job_id"]
    assert summaries[0]["job_try"] == ctx["job_try"]
    assert "job_id" not in structlog.contextvars.get_contextvars()
    return outcome, summaries[0]


def test_backoff_stays_within_its_exponential_ceiling() -> None:
    for job_try in range(1, 10):
        ceiling = min(POLICY.retry_max_delay_s, POLICY.retry_base_delay_s * 2 ** (job_try - 1))
        delays = [backoff_delay(POLICY, job_try) for _ in range(400)]
        assert all(0 <= delay <= ceiling for delay in delays)
        assert max(delays) > ceiling / 2  # jittered over the range, not stuck at zero
        assert len(set(delays)) > 1


async def test_a_successful_job_returns_json_ready_data() -> None:
    assert THIRTY.__name__ == "compute_order_total"
    ctx = job_ctx()
    result, line = await run_logged(THIRTY, ctx, order_id=1)
    assert result == {"order_id": 1, "total": "30.00"}
    assert recorded(ctx) == []
    assert line["event"] == "job.done"
    assert line["job"] == "compute_order_total"
    assert line["duration_ms"] >= 0


async def test_an_invalid_payload_fails_naming_the_field() -> None:
    entry = entry_raising(AssertionError("the body must not run"), PlaceOrderPayload)
    items = [{"item_id": 1, "quantity": "2"}]
    ctx = job_ctx()
    error, line = await run_logged(entry, ctx, customer_id=1, items=items)
    assert isinstance(error, InvalidPayloadError)
    assert error.message.startswith("items[0].quantity: Input should be a valid integer")
    assert (line["event"], line["code"]) == ("job.failed", "invalid_payload")
    assert recorded(ctx) == [("job-1", "compute_order_total", 1, error.to_document())]


async def test_missing_and_extra_arguments_are_invalid_payloads() -> None:
    error, _ = await run_logged(THIRTY, job_ctx())
    assert isinstance(error, InvalidPayloadError)
    assert error.message == "order_id: Field required"
    error, _ = await run_logged(THIRTY, job_ctx(), order_id=1, extra=True)
    assert isinstance(error, InvalidPayloadError)
    assert error.message == "extra: Extra inputs are not permitted"


async def test_positional_arguments_are_refused() -> None:
    with pytest.raises(InvalidPayloadError, match="positional"):
        await THIRTY(job_ctx(), 1)
    assert "job_id" not in structlog.contextvars.get_contextvars()


async def test_a_transient_fault_before_the_last_try_is_retried_with_backoff() -> None:
    for job_try in (1, 2):
        ctx = job_ctx(job_try)
        error, line = await run_logged(entry_raising(database_error("40P01")), ctx, order_id=1)
        assert isinstance(error, Retry)
        assert recorded(ctx) == []  # not a dead letter: it runs again
        ceiling_ms = 1000 * POLICY.retry_base_delay_s * 2 ** (job_try - 1)
        assert error.defer_score is not None
        assert 0 <= error.defer_score <= ceiling_ms
        assert line["event"] == "job.retrying"
        assert 0 <= line["retry_in_s"] <= ceiling_ms / 1000


async def test_a_transient_fault_on_the_last_try_exhausts_the_retries() -> None:
    cause = ConnectionError("database went away")
    ctx = job_ctx(POLICY.max_tries)
    error, line = await run_logged(entry_raising(cause), ctx, order_id=1)
    assert isinstance(error, RetriesExhaustedError)
    assert recorded(ctx) == [("job-1", "compute_order_total", 3, error.to_document())]
    assert error.code == "retries_exhausted"
    assert "after 3 tries" in error.message
    assert "database went away" in error.message
    assert error.__cause__ is cause
    assert line["event"] == "job.gave_up"


async def test_a_job_timeout_is_a_transient_fault() -> None:
    async def hangs(ctx: JobContext, payload: ComputeOrderTotalPayload) -> OrderTotalResult:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    entry = job_entry("compute_order_total", ComputeOrderTotalPayload, hangs)
    impatient = replace(POLICY, job_timeout_s=0.01)
    error, line = await run_logged(entry, job_ctx(policy=impatient), order_id=1)
    assert isinstance(error, Retry)
    assert line["event"] == "job.retrying"


async def test_a_permanent_error_is_never_retried() -> None:
    ctx = job_ctx()
    error, line = await run_logged(entry_raising(UnknownOrderError("order 1")), ctx, order_id=1)
    assert isinstance(error, UnknownOrderError)
    assert (line["event"], line["code"]) == ("job.failed", "unknown_order")
    assert [letter[3]["code"] for letter in recorded(ctx)] == ["unknown_order"]


async def test_a_bug_in_a_job_is_raised_as_is_and_logged_as_a_crash() -> None:
    bug = KeyError("oops")
    ctx = job_ctx()
    error, line = await run_logged(entry_raising(bug), ctx, order_id=1)
    assert error is bug
    assert (line["event"], line["code"]) == ("job.crashed", "internal_error")
    crash = {"code": "internal_error", "message": "KeyError: 'oops'"}
    assert recorded(ctx) == [("job-1", "compute_order_total", 1, crash)]


async def test_the_wrapper_unbinds_only_its_own_context() -> None:
    structlog.contextvars.bind_contextvars(replica_id="r-1")
    try:
        _, line = await run_logged(THIRTY, job_ctx(), order_id=1)
        assert line["replica_id"] == "r-1"
        assert structlog.contextvars.get_contextvars() == {"replica_id": "r-1"}
    finally:
        structlog.contextvars.clear_contextvars()


async def test_chunk_job_lines_name_their_batch_and_concurrent_jobs_keep_their_own() -> None:
    both_running = asyncio.Barrier(2)

    async def chunk(ctx: JobContext, payload: ComputeBatchTotalsPayload) -> BatchTotalsResult:
        await both_running.wait()  # the other job has bound its fields by now
        structlog.get_logger("orderworker.test").info("batch.chunk_step")
        return BatchTotalsResult(
            batch_id=payload.batch_id or "", computed=0, missing=[], total_sum=Decimal("0")
        )

    entry = job_entry("compute_batch_totals", ComputeBatchTotalsPayload, chunk)
    alone = {**job_ctx(), "job_id": "job-alone"}
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        await asyncio.gather(
            asyncio.create_task(entry(job_ctx(), order_ids=[1], batch_id="batch-a")),
            asyncio.create_task(entry(alone, order_ids=[2], batch_id=None)),
        )
    named = {(line["event"], line["job_id"], line.get("batch_id")) for line in logs}
    assert named == {
        ("batch.chunk_step", "job-1", "batch-a"),
        ("job.done", "job-1", "batch-a"),
        ("batch.chunk_step", "job-alone", "job-alone"),  # a chunk sent alone is its own batch
        ("job.done", "job-alone", "job-alone"),
    }
    assert "batch_id" not in structlog.contextvars.get_contextvars()


async def test_other_jobs_lines_carry_no_batch() -> None:
    _, line = await run_logged(THIRTY, job_ctx(), order_id=1)
    assert "batch_id" not in line


def test_unknown_items_are_named_up_to_ten_then_counted() -> None:
    assert str(UnknownItemsError([7, 9])) == "items do not exist: 7, 9"
    many = UnknownItemsError(list(range(100, 501)))
    assert str(many) == "items do not exist: " + ", ".join(map(str, range(100, 110))) + (
        " and 391 more"
    )
    assert many.item_ids == list(range(100, 501))  # all of them, for whoever needs the list
