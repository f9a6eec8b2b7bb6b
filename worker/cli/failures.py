"""What an error means to the person at the command line: a code, one line naming the service
(host and port, never a password), and an exit code. Imported only once something failed."""

from __future__ import annotations

import logging
import sys

from arq.connections import RedisSettings
from redis.exceptions import (
    AuthenticationError,
    RedisError,
    ResponseError,
    WatchError,
)
from redis.exceptions import TimeoutError as RedisTimeoutError

from jobs.connection import endpoint
from worker.cli.command_errors import EXIT_FAILED, EXIT_USAGE, CommandError

# Plain logging: silent unless the command configured logging (at DEBUG it shows the traceback).
log = logging.getLogger("orderworker.cli")


def command_error(error: BaseException) -> CommandError:
    if isinstance(error, CommandError):
        return error
    known = database_or_job_error(error)
    if known is not None:
        return known
    if isinstance(error, TimeoutError):
        return CommandError("timeout", str(error) or "timed out")
    if isinstance(error, RedisError):
        return CommandError("redis_error", f"Redis: {first_line(error)}")
    # No rule describes it: a bug. One line here; the traceback in the log, at debug level.
    log.debug("unexpected error", exc_info=error)
    return CommandError("internal_error", f"{type(error).__name__}: {first_line(error)}")


def database_or_job_error(error: BaseException) -> CommandError | None:
    """The job's and the database's errors. Only a command that loaded SQLAlchemy can meet them,
    and the others (health's probes) do not load it here either."""
    if "sqlalchemy" not in sys.modules:
        return None
    from sqlalchemy.exc import DBAPIError

    from db.connect_errors import DatabaseConnectError
    from db.schema import SchemaMissingError
    from jobs.errors import BAD_INPUT_CODES, JobError

    if isinstance(error, JobError):
        exit_code = EXIT_USAGE if error.code in BAD_INPUT_CODES else EXIT_FAILED
        return CommandError(error.code, error.message, exit_code)
    if isinstance(error, DatabaseConnectError | SchemaMissingError):
        return CommandError(error.code, str(error))
    if isinstance(error, DBAPIError):
        return CommandError("database_error", f"PostgreSQL: {first_line(error)}")
    return None


def redis_error(error: RedisError, settings: RedisSettings) -> CommandError:
    """A Redis client error as one line naming the server it came from."""
    where = f"Redis at {endpoint(settings)}"
    detail = first_line(error)
    if _not_replicated(error):  # the job is on the primary: it may still run
        return CommandError("not_replicated", f"{where}: {detail}")
    if isinstance(error, AuthenticationError):
        return CommandError("redis_auth_failed", f"{where} refused the login: {detail}")
    if isinstance(error, ResponseError) and "DB index is out of range" in detail:
        return CommandError(
            "invalid_setting",
            f"ORDERWORKER_REDIS_URL names database {settings.database}, "
            f"which {where} does not have ({detail})",
            EXIT_USAGE,
        )
    if isinstance(error, ResponseError):
        return CommandError("redis_error", f"{where} refused a command: {detail}")
    if isinstance(error, RedisTimeoutError):
        return CommandError("redis_unavailable", f"{where} did not answer in time")
    if isinstance(error, WatchError) or "Connection refused" not in detail:
        return CommandError("redis_unavailable", f"{where} unreachable: {detail}")
    return CommandError("redis_unavailable", f"{where} refused the connection")


def _not_replicated(error: RedisError) -> bool:
    # Only the producer client raises it: a command that never loaded it (health) never imports it.
    client = sys.modules.get("jobs.client")
    return client is not None and isinstance(error, client.NotReplicatedError)


def first_line(error: BaseException) -> str:
    # SQLAlchemy appends the statement and a "Background on this error" link on later lines.
    text_lines = str(getattr(error, "orig", None) or error).strip().splitlines()
    return text_lines[0] if text_lines else type(error).__name__
