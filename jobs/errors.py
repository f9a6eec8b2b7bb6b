"""Failure taxonomy: permanent errors fail at once with a code; transient faults are retried."""

from __future__ import annotations

import asyncio
from typing import Any

from arq.jobs import DeserializationError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from db.connect_errors import DatabaseConnectError
from db.connect_errors import sqlstate as sqlstate  # re-exported for the jobs that read SQLSTATEs

# SQLSTATEs worth another try: serialization failure, deadlock, lock not available, shutdowns,
# "the database system is starting up", too many connections, statement timeout.
TRANSIENT_SQLSTATES = {
    "40001",
    "40P01",
    "55P03",
    "57014",
    "57P01",
    "57P02",
    "57P03",
    "53300",
    "53400",
}


class JobError(Exception):
    """A permanent failure: never retried, recorded with a machine-readable code."""

    code = "job_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def to_document(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class InvalidPayloadError(JobError):
    code = "invalid_payload"


class UnknownCustomerError(JobError):
    code = "unknown_customer"


class UnknownItemError(JobError):
    code = "unknown_item"


class UnknownOrderError(JobError):
    code = "unknown_order"


class RetriesExhaustedError(JobError):
    code = "retries_exhausted"


def is_transient(error: BaseException) -> bool:
    if isinstance(error, BaseExceptionGroup):
        return all(is_transient(inner) for inner in error.exceptions)
    if isinstance(error, JobError):
        return False
    if isinstance(error, PoolTimeoutError | TimeoutError | ConnectionError | OSError):
        return True
    if isinstance(error, DBAPIError):
        if error.connection_invalidated:
            return True
        code = sqlstate(error)
        return code is None or code in TRANSIENT_SQLSTATES or code.startswith("08")
    return False


def error_document(error: BaseException) -> dict[str, str]:
    """How a failure is stored in a job's result and in dead letters: `{"code", "message"}`.
    (Failures arq decides itself get theirs from worker/arq_seam/wording.py.)"""
    if isinstance(error, BaseExceptionGroup):
        permanent = [inner for inner in error.exceptions if isinstance(inner, JobError)]
        return error_document(permanent[0] if permanent else error.exceptions[0])
    if isinstance(error, JobError):
        return error.to_document()
    if isinstance(error, DeserializationError):
        cause = error.__cause__
        return {"code": "undecodable_payload", "message": str(cause or error)}
    if isinstance(error, DatabaseConnectError):
        return {"code": error.code, "message": str(error)}
    if isinstance(error, DBAPIError):
        # The driver's own message, without SQLAlchemy's copy of the statement.
        code = "database_unavailable" if is_transient(error) else "database_error"
        return {"code": code, "message": f"{type(error.orig).__name__}: {error.orig}"}
    if isinstance(error, asyncio.CancelledError):
        return {"code": "aborted", "message": "the job was aborted"}
    return {"code": "internal_error", "message": f"{type(error).__name__}: {error}"}


def describe(error: BaseException) -> dict[str, Any]:
    """Log fields for an error, without its arguments (they may hold payload data)."""
    return {"error_type": type(error).__name__, **error_document(error)}


class IdempotencyConflictError(JobError):
    code = "idempotency_conflict"


# Failures caused by the request itself, not by the worker: a producer reports them as bad input.
BAD_INPUT_CODES = frozenset(
    error.code
    for error in (
        InvalidPayloadError,
        UnknownCustomerError,
        UnknownItemError,
        IdempotencyConflictError,
    )
)

# Failures a replay repeats unchanged (unless the data was fixed): `jobs retry --all` leaves them.
PERMANENT_CODES = BAD_INPUT_CODES | {UnknownOrderError.code}
