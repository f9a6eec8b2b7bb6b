"""arq's wording, matched in this one place (arq 0.28.0, arq/worker.py).

arq reports the failures it decides itself as `JobExecutionFailed` with a text (`Worker.run_job`:
"function 'x' not found", "max N retries exceeded", "job expired"), and logs every job failure with
a traceback as "<time>s ! <ref> failed, <Error>: <message>". It logs the failures it decides before
a job runs in lines of their own (one, for a payload it cannot decode, with a traceback at ERROR).
tests/integration/test_arq_wording.py makes arq produce each of them and checks how they are read
here.
"""

from __future__ import annotations

import logging
from typing import Any

from arq.worker import JobExecutionFailed

from jobs.errors import describe

# (text in arq's message, our error code), in the order they are tried.
EXECUTION_FAILURE_CODES = (
    ("not found", "unknown_function"),
    ("retries exceeded", "retries_exhausted"),
    ("expired", "expired"),
)
# In arq's "%6.2fs ! %s failed, %s: %s" (Worker.run_job, a job that raised).
JOB_FAILED_LOG_TEXT = " failed, "
# arq's lines for the failures it decides before a job runs (Worker.run_job), by their format
# string, with the code the failure is stored under.
ARQ_JOB_FAILURE_LINES = {
    "deserializing job %s failed": "undecodable_payload",
    "job %s expired": "expired",
    "job %s, function %r not found": "unknown_function",
    "%6.2fs ! %s max retries %d exceeded": "retries_exhausted",
}


def execution_failure_document(error: JobExecutionFailed) -> dict[str, str]:
    """How a failure arq decided itself is stored: `{"code", "message"}` like any other."""
    text = str(error)
    for fragment, code in EXECUTION_FAILURE_CODES:
        if fragment in text:
            return {"code": code, "message": text}
    return {"code": "job_failed", "message": text}


def serialize_job_data(value: Any) -> bytes:
    """jobs.serialization.serialize, with arq's own failures given their codes first.

    arq's `serialize_result` hands the serializer a dict whose "r" is the job's outcome.
    """
    # Here, not at the top: logging imports this module, and every CLI command configures logging.
    from jobs.serialization import serialize

    if isinstance(value, dict) and isinstance(value.get("r"), JobExecutionFailed):
        value = {**value, "r": execution_failure_document(value["r"])}
    return serialize(value)


def is_arq_job_failure_line(record: logging.LogRecord) -> bool:
    """arq's own copy of a job failure (at ERROR, with a traceback)."""
    return bool(record.exc_info) and JOB_FAILED_LOG_TEXT in record.getMessage()


def arq_job_failure_fields(record: logging.LogRecord) -> dict[str, Any] | None:
    """An arq line for a failure it decided, as the fields of our own `job.failed` line: the job
    id, the code and the reason (for an undecodable payload: why, not where it was found out)."""
    code = ARQ_JOB_FAILURE_LINES.get(str(record.msg))
    args = record.args
    if code is None or not isinstance(args, tuple) or not args:
        return None
    if code == "retries_exhausted" and len(args) == 3:
        job_id, _, function = str(args[1]).rpartition(":")  # arq's ref: "<job id>:<function>"
        return _failure(job_id, code, f"max {args[2]} retries exceeded", job=function)
    if code == "unknown_function" and len(args) == 2:
        return _failure(str(args[0]), code, f"function {args[1]!r} not found", job=str(args[1]))
    if code == "expired":
        return _failure(str(args[0]), code, "job expired")
    if code == "undecodable_payload" and record.exc_info and record.exc_info[1] is not None:
        return _failure(str(args[0]), **describe(record.exc_info[1]))
    return None


def _failure(job_id: str, code: str, message: str, **fields: str) -> dict[str, Any]:
    return {"job_id": job_id, **fields, "code": code, "message": message}
