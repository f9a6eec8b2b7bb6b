"""arq's wording, matched in this one place (arq 0.28.0, arq/worker.py).

arq reports the failures it decides itself as `JobExecutionFailed` with a text (`Worker.run_job`:
"function 'x' not found", "max N retries exceeded", "job expired"), and logs every job failure with
a traceback as "<time>s ! <ref> failed, <Error>: <message>". tests/integration/test_arq_wording.py
makes arq produce each of them and checks how they are read here.
"""

from __future__ import annotations

import logging
from typing import Any

from arq.worker import JobExecutionFailed

# (text in arq's message, our error code), in the order they are tried.
EXECUTION_FAILURE_CODES = (
    ("not found", "unknown_function"),
    ("retries exceeded", "retries_exhausted"),
    ("expired", "expired"),
)
# In arq's "%6.2fs ! %s failed, %s: %s" (Worker.run_job, a job that raised).
JOB_FAILED_LOG_TEXT = " failed, "


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
