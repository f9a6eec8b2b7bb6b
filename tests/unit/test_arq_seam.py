"""The seam with arq: the version it was checked against, and how arq's wording is read."""

from __future__ import annotations

import json
import logging
import sys

import pytest
from arq.worker import JobExecutionFailed

from worker.arq_seam import CHECKED_ARQ_VERSION, installed_arq_version
from worker.arq_seam.wording import (
    execution_failure_document,
    is_arq_job_failure_line,
    serialize_job_data,
)


def test_the_installed_arq_is_the_version_the_overrides_were_checked_against() -> None:
    # On an upgrade: read arq's worker.py again, check every override in worker/arq_seam/
    # against it, and only then move CHECKED_ARQ_VERSION.
    assert installed_arq_version() == CHECKED_ARQ_VERSION


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("function 'x' not found", "unknown_function"),
        ("max 5 retries exceeded", "retries_exhausted"),
        ("job expired", "expired"),
        ("something else", "job_failed"),
    ],
)
def test_arq_execution_failures_have_codes(message: str, code: str) -> None:
    assert execution_failure_document(JobExecutionFailed(message)) == {
        "code": code,
        "message": message,
    }


def test_a_result_arq_fails_is_stored_with_its_code_in_the_same_shape() -> None:
    result = {"t": 1, "f": "x", "s": False, "r": JobExecutionFailed("job expired"), "id": "j"}
    data = serialize_job_data(result)
    assert data == (
        b'{"t":1,"f":"x","s":false,"r":{"code":"expired","message":"job expired"},"id":"j"}'
    )
    assert json.loads(serialize_job_data({"s": True, "r": {"total": "1.00"}}))["r"] == {
        "total": "1.00"
    }


def record(message: str, *, with_traceback: bool) -> logging.LogRecord:
    exc_info = None
    if with_traceback:
        try:
            raise ValueError("bad input")
        except ValueError:
            exc_info = sys.exc_info()
    return logging.LogRecord("arq.worker", logging.ERROR, __file__, 1, message, (), exc_info)


def test_arq_job_failure_lines_are_recognised_only_with_their_traceback() -> None:
    line = "  0.01s ! abc:place_order failed, ValueError: bad input"
    assert is_arq_job_failure_line(record(line, with_traceback=True))
    assert not is_arq_job_failure_line(record(line, with_traceback=False))
    assert not is_arq_job_failure_line(record("job abc expired", with_traceback=True))
