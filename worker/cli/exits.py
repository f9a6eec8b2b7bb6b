"""Exit codes and the one-line error reporting every command shares: one line on stderr and, with
`--json`, one `{"error": {"code", "message"}}` object on stdout."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from functools import wraps
from typing import NoReturn, ParamSpec

import typer

# Typer ships its own copy of click: its commands raise that copy's exceptions, not click's.
from typer._click import core as click
from typer._click import exceptions as click_errors

from worker.cli.command_errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    CommandError,
    UsageError,
)

P = ParamSpec("P")
__all__ = [  # the codes and errors are defined beside, for what reports them without this module
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "CommandError",
    "UsageError",
    "error_field",
    "fail",
    "output_mode",
    "report",
    "reports_errors",
    "run_command",
    "show_error",
]

# Is the running command's output JSON? Set from its `--json` option before it runs.
json_output: ContextVar[bool] = ContextVar("json_output", default=False)


# The code of a failure given none, by its exit code (130: interrupted, as a shell counts SIGINT).
DEFAULT_CODES = {EXIT_USAGE: "usage", EXIT_INTERRUPTED: "interrupted"}


def fail(
    message: str,
    exit_code: int = EXIT_USAGE,
    code: str | None = None,
    fields: dict[str, str] | None = None,
) -> NoReturn:
    code = code or DEFAULT_CODES.get(exit_code, "failed")
    report(CommandError(code, message, exit_code, fields))


def report(error: CommandError) -> NoReturn:
    show_error(error.code, error.message, error.fields)
    raise typer.Exit(error.exit_code)


def show_error(code: str, message: str, fields: Mapping[str, object] | None = None) -> None:
    """The one line on stderr; with `--json`, also the one error object on stdout."""
    if json_output.get():
        typer.echo(json.dumps({**(fields or {}), **error_field(code, message)}))
    typer.echo(f"orderworker: {code}: {message}", err=True)


def error_field(code: str, message: str) -> dict[str, dict[str, str]]:
    """`{"error": {"code", "message"}}`: the whole object of a failed command, or the field a
    failed report (a probe's) carries beside its own."""
    return {"error": {"code": code, "message": message}}


@contextmanager
def output_mode(as_json: bool) -> Iterator[None]:
    token = json_output.set(as_json)
    try:
        yield
    finally:
        json_output.reset(token)


def reports_errors(command: Callable[P, None]) -> Callable[P, None]:
    """Turn every error into one line and an exit code instead of a traceback."""

    @wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        with output_mode(bool(kwargs.get("as_json"))):
            try:
                command(*args, **kwargs)
            except CommandError as error:
                report(error)
            except KeyboardInterrupt:  # Ctrl-C: still one line, and with --json one object
                report(CommandError("interrupted", "interrupted", EXIT_INTERRUPTED))
            except typer.Exit:
                raise
            except Exception as error:
                from worker.cli.failures import command_error  # only once something failed

                report(command_error(error))

    return wrapper


def run_command(command: click.Command, args: Sequence[str] | None = None) -> int:
    """Run the CLI; a usage error is one line (click's, without its box) and exit code 2."""
    arguments = list(sys.argv[1:] if args is None else args)
    try:
        result = command.main(arguments, prog_name="orderworker", standalone_mode=False)
    except click_errors.NoArgsIsHelpError as error:
        if error.format_message().strip():  # Rich's help is printed as it is made; plain is not
            error.show()
        return EXIT_USAGE
    except click_errors.UsageError as error:
        with output_mode(wants_json(arguments)):
            show_error("usage", usage_message(error))
        return EXIT_USAGE
    except click_errors.ClickException as error:
        with output_mode(wants_json(arguments)):
            show_error("usage", error.format_message())
        return error.exit_code
    except CommandError as error:  # from a command that does not report its own errors
        with output_mode(wants_json(arguments)):
            show_error(error.code, error.message)
        return error.exit_code
    except typer.Abort:
        typer.echo("orderworker: aborted", err=True)
        return EXIT_FAILED
    return result if isinstance(result, int) else 0


def usage_message(error: click_errors.UsageError) -> str:
    command_path = error.ctx.command_path if error.ctx is not None else "orderworker"
    return f"{error.format_message()} (see '{command_path} --help')"


def wants_json(arguments: Sequence[str]) -> bool:
    """Did the command line ask for JSON? Read from the words when click could not parse them."""
    options = arguments[: arguments.index("--")] if "--" in arguments else arguments
    return "--json" in options
