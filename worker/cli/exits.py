"""Exit codes and the one-line error reporting every command shares."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import NoReturn, ParamSpec

import typer
from sqlalchemy.exc import DBAPIError

from jobs.connection import REDIS_ERRORS

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


def reports_errors(command: Callable[P, None]) -> Callable[P, None]:
    """Turn expected errors into one line and an exit code instead of a traceback."""

    @wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            command(*args, **kwargs)
        except UsageError as error:
            fail(str(error))
        except (*REDIS_ERRORS, TimeoutError, DBAPIError) as error:
            fail(f"{type(error).__name__}: {first_line(error)}", EXIT_FAILED)

    return wrapper
