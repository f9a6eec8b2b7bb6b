"""structlog set up once at process start: JSON off a TTY, console on one; stdlib loggers (arq,
SQLAlchemy, Alembic) routed through the same processors so every line has one shape."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import EventDict, Processor

from worker.arq_seam.wording import arq_job_failure_fields, is_arq_job_failure_line

PASSWORD_IN_URL = re.compile(r"(://[^:/@\s]*:)[^@\s]+@")
SECRET_KEYS = ("password", "secret", "token", "database_url", "redis_url")


def redact_secrets(_: Any, __: str, event_dict: EventDict) -> EventDict:
    """Passwords never reach a log line: neither inside URLs nor under a secret-sounding key."""
    for key, value in event_dict.items():
        if any(secret in key.lower() for secret in SECRET_KEYS):
            event_dict[key] = "***"
        elif isinstance(value, str) and "://" in value:
            event_dict[key] = PASSWORD_IN_URL.sub(r"\1***@", value)
    return event_dict


class ArqLines(logging.Filter):
    """arq's own lines in our shape. Its copy of a job failure our runner already logged (at
    ERROR, with a traceback) is dropped. A failure arq decides before a job runs becomes one
    `job.failed` WARNING line with the job id, code and reason: no traceback, since anyone can
    send a payload that cannot be decoded."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("arq."):
            return True
        if is_arq_job_failure_line(record):
            return False
        fields = arq_job_failure_fields(record)
        if fields is not None:
            record.msg, record.args = "job.failed", ()
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info = record.exc_text = None
            record.__dict__.update(fields)  # structlog's ExtraAdder makes them fields
        return True


class NamedWriteLogger(structlog.WriteLogger):
    """structlog's fastest logger, plus the name that `add_logger_name` puts on every line."""

    def __init__(self, stream: TextIO, name: str) -> None:
        super().__init__(stream)
        self.name = name


class NamedWriteLoggerFactory:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def __call__(self, *args: Any) -> NamedWriteLogger:
        return NamedWriteLogger(self.stream, str(args[0]) if args else "orderworker")


def configure_logging(
    level: str = "INFO",
    log_format: Literal["auto", "json", "console"] = "auto",
    stream: TextIO | None = None,
) -> None:
    stream = stream or sys.stderr
    as_json = log_format == "json" or (log_format == "auto" and not stream.isatty())
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]
    renderer: Processor
    if as_json:
        renderer = structlog.processors.JSONRenderer()
        # Tracebacks as data, without local variables: they would hold payloads and contexts.
        shared.append(
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            )
        )
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    # Our own lines skip the stdlib machinery: a level-filtering structlog logger renders and
    # writes them directly (a job's summary line is on every job's hot path).
    structlog.configure(
        processors=[*shared, renderer],
        logger_factory=NamedWriteLoggerFactory(stream),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(ArqLines())  # on the handler: it sees every arq logger's lines
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # arq logs every job start and end; our own one summary line per job is enough.
    logging.getLogger("arq.worker").setLevel(max(logging.WARNING, logging.getLevelName(level)))
    for chatty in ("sqlalchemy.engine", "alembic.runtime.plugins", "pgserver"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
