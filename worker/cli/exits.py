"""Exit codes and the one-line error reporting every command shares."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import NoReturn, ParamSpec

import typer

P = ParamSpec("P")

EXIT_FAILED = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """Bad usage or bad input: exit code 2 with one line on stderr."""


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    typer.echo(f"orderworker: {message}", err=True)
    raise typer.Exit(code)


def first_line(error: BaseException) -> str:
    # SQLAlchemy appends the statement and a "Background on this error" link on later lines.
    text_lines = str(getattr(error, "orig", None) or error).strip().splitlines()
    return text_lines[0] if text_lines else type(error).__name__


def service_errors() -> tuple[type[Exception], ...]:
    """Redis's and SQLAlchemy's errors, read from sys.modules: only a command that imported a
    client can meet its errors, and the others (health's probes) never import them."""
    redis, sqlalchemy = sys.modules.get("jobs.connection"), sys.modules.get("sqlalchemy.exc")
    found: tuple[type[Exception], ...] = (TimeoutError, ConnectionError, OSError)
    if redis is not None:
        found += redis.REDIS_ERRORS
    if sqlalchemy is not None:
        found += (sqlalchemy.DBAPIError,)
    return found


def reports_errors(command: Callable[P, None]) -> Callable[P, None]:
    """Turn expected errors into one line and an exit code instead of a traceback."""

    @wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            command(*args, **kwargs)
        except UsageError as error:
            fail(str(error))
        except service_errors() as error:
            fail(f"{type(error).__name__}: {first_line(error)}", EXIT_FAILED)

    return wrapper
