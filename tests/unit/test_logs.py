"""Log lines: secrets redacted, and one JSON object per line from structlog and stdlib alike."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from arq.jobs import DeserializationError

from worker.logs import configure_logging, redact_secrets

DATABASE_URL = "postgresql+asyncpg://app:hunter2@db.example:5432/orders"


def redacted(**fields: Any) -> dict[str, Any]:
    return dict(redact_secrets(None, "info", {"event": "test", **fields}))


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide state: put back exactly what was there."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    named = {name: logging.getLogger(name).level for name in logging.root.manager.loggerDict}
    structlog_config = structlog.get_config()
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, named_level in named.items():
        logging.getLogger(name).setLevel(named_level)
    structlog.reset_defaults()
    structlog.configure(**structlog_config)
    structlog.contextvars.clear_contextvars()


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    lines = stream.getvalue().splitlines()
    assert lines, "nothing was logged"
    return [json.loads(line) for line in lines]


def test_passwords_inside_urls_are_hidden() -> None:
    fields = redacted(
        target=DATABASE_URL,
        cache="redis://:s3cret@cache.example:6379/0",
        note=f"could not reach {DATABASE_URL}: refused",
    )
    assert fields["target"] == "postgresql+asyncpg://app:***@db.example:5432/orders"
    assert fields["cache"] == "redis://:***@cache.example:6379/0"
    assert (
        fields["note"]
        == "could not reach postgresql+asyncpg://app:***@db.example:5432/orders: refused"
    )


def test_urls_without_passwords_are_left_alone() -> None:
    fields = redacted(cache="redis://cache.example:6379/0", site="https://example.com/a:b")
    assert fields["cache"] == "redis://cache.example:6379/0"
    assert fields["site"] == "https://example.com/a:b"


@pytest.mark.parametrize(
    "key", ["password", "db_password", "client_secret", "api_token", "database_url", "REDIS_URL"]
)
def test_values_under_secret_sounding_keys_are_hidden(key: str) -> None:
    assert redacted(**{key: "plain-value"})[key] == "***"


def test_ordinary_fields_are_untouched() -> None:
    assert redacted(order_id=7, queue="arq:queue") == {
        "event": "test",
        "order_id": 7,
        "queue": "arq:queue",
    }


@pytest.mark.usefixtures("restore_logging")
def test_json_logging_writes_one_object_per_line_for_structlog_and_stdlib() -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    structlog.contextvars.bind_contextvars(job_id="job-7")
    structlog.get_logger("orderworker.test").info("order.placed", order_id=3, url=DATABASE_URL)
    logging.getLogger("arq.jobs").warning("connecting to %s", DATABASE_URL)
    structlog.contextvars.clear_contextvars()
    own, foreign = json_lines(stream)
    assert own["event"] == "order.placed"
    assert (own["order_id"], own["job_id"], own["level"]) == (3, "job-7", "info")
    assert own["logger"] == "orderworker.test"
    assert foreign["event"] == "connecting to postgresql+asyncpg://app:***@db.example:5432/orders"
    assert (foreign["job_id"], foreign["level"], foreign["logger"]) == (
        "job-7",
        "warning",
        "arq.jobs",
    )
    assert own.keys() >= {"timestamp"} and foreign.keys() >= {"timestamp"}
    assert "hunter2" not in stream.getvalue()


@pytest.mark.usefixtures("restore_logging")
def test_lines_below_the_level_are_dropped() -> None:
    stream = io.StringIO()
    configure_logging("WARNING", "json", stream=stream)
    structlog.get_logger("orderworker.quiet").info("order.placed")
    logging.getLogger("orderworker.stdlib").info("hidden")
    structlog.get_logger("orderworker.quiet").warning("batch.slow")
    assert [line["event"] for line in json_lines(stream)] == ["batch.slow"]


@pytest.mark.usefixtures("restore_logging")
def test_exceptions_are_logged_as_structured_tracebacks() -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    try:
        raise ValueError("bad thing")
    except ValueError:
        structlog.get_logger("orderworker.errors").exception("job.crashed")
    (line,) = json_lines(stream)
    assert line["event"] == "job.crashed"
    assert line["exception"][0]["exc_type"] == "ValueError"
    assert line["exception"][0]["exc_value"] == "bad thing"


@pytest.mark.usefixtures("restore_logging")
def test_auto_format_is_json_off_a_tty_and_console_renders_plain_text() -> None:
    stream = io.StringIO()
    configure_logging("INFO", "auto", stream=stream)
    structlog.get_logger("orderworker.auto").info("worker.started")
    assert json_lines(stream)[0]["event"] == "worker.started"
    console = io.StringIO()
    configure_logging("INFO", "console", stream=console)
    structlog.get_logger("orderworker.console").info("worker.started", replicas=2)
    text = console.getvalue()
    assert "worker.started" in text
    assert "replicas" in text
    assert not text.lstrip().startswith("{")


@pytest.mark.usefixtures("restore_logging")
def test_chatty_libraries_are_quietened() -> None:
    configure_logging("DEBUG", "json", stream=io.StringIO())
    assert logging.getLogger("sqlalchemy.engine").level == logging.WARNING
    assert logging.getLogger("arq.worker").level == logging.WARNING
    assert logging.getLogger().level == logging.DEBUG


def test_arq_copies_of_job_failures_are_dropped_other_arq_lines_kept(
    restore_logging: None,
) -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json", stream)
    arq_worker = logging.getLogger("arq.worker")
    try:
        raise ValueError("bad input")
    except ValueError:
        arq_worker.exception("  0.01s ! abc:place_order failed, ValueError: bad input")
    arq_worker.warning("Health check failed: no health check sentinel value found")
    assert [line["event"] for line in json_lines(stream)] == [
        "Health check failed: no health check sentinel value found"
    ]


def test_arqs_undecodable_payload_line_is_one_warning_without_a_traceback(
    restore_logging: None,
) -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json", stream)
    try:  # as arq's Worker.run_job raises and logs it
        try:
            raise ValueError("pickle payloads are refused; send JSON")
        except ValueError as cause:
            raise DeserializationError("unable to deserialize job") from cause
    except DeserializationError:
        logging.getLogger("arq.worker").exception("deserializing job %s failed", "job-9")
    [line] = json_lines(stream)
    assert "exception" not in line
    assert line == {
        "event": "job.failed",
        "level": "warning",
        "logger": "arq.worker",
        "timestamp": line["timestamp"],
        "job_id": "job-9",
        "error_type": "DeserializationError",
        "code": "undecodable_payload",
        "message": "pickle payloads are refused; send JSON",
    }
    assert len(stream.getvalue()) < 400


@pytest.mark.parametrize(
    ("template", "args", "fields"),
    [
        ("job %s expired", ("j1",), {"job_id": "j1", "code": "expired"}),
        (
            "job %s, function %r not found",
            ("j2", "nope"),
            {"job_id": "j2", "job": "nope", "code": "unknown_function"},
        ),
        (
            "%6.2fs ! %s max retries %d exceeded",
            (1.5, "batch:7:compute_batch_totals", 5),
            {"job_id": "batch:7", "job": "compute_batch_totals", "code": "retries_exhausted"},
        ),
    ],
)
def test_arqs_other_failure_lines_name_the_job_as_a_field(
    restore_logging: None, template: str, args: tuple[object, ...], fields: dict[str, str]
) -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json", stream)
    logging.getLogger("arq.worker").warning(template, *args)
    [line] = json_lines(stream)
    assert (line["event"], line["level"]) == ("job.failed", "warning")
    assert {key: line[key] for key in fields} == fields
    assert line["message"]


def test_the_replica_bound_once_is_on_its_lines_and_arqs(restore_logging: None) -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json", stream)
    structlog.contextvars.bind_contextvars(replica_id="host-1-abc")
    structlog.get_logger("orderworker.worker").info("worker.started")
    logging.getLogger("arq.worker").warning("job %s expired", "j1")
    assert [line["replica_id"] for line in json_lines(stream)] == ["host-1-abc", "host-1-abc"]
