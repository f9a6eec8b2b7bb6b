"""What a command needs before it runs: settings, logging, the URLs it uses, an event loop."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Coroutine
from functools import wraps
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar

import uvloop

from worker.cli.exits import EXIT_USAGE, fail
from worker.settings import Settings, SettingsError, load_settings

P = ParamSpec("P")
T = TypeVar("T")


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


def configure_logging(level: str, log_format: Literal["auto", "json", "console"]) -> None:
    # Imported here: structlog is a fifth of a command's start-up, and health's checks never log.
    from worker.logs import configure_logging as configure

    configure(level, log_format)


def settings_or_exit(*, logs: bool = True) -> Settings:
    try:
        settings = load_settings()
    except SettingsError as error:
        fail(str(error), EXIT_USAGE, "invalid_setting")
    if logs:
        configure_logging(settings.log.level, settings.log.format)
    return settings


def require_urls(settings: Settings, *, database: bool, redis: bool) -> None:
    missing = []
    if database and settings.database_url is None:
        missing.append("ORDERWORKER_DATABASE_URL")
    if redis and settings.redis_url is None:
        missing.append("ORDERWORKER_REDIS_URL")
    if missing:
        message = " and ".join(missing) + " not set (see settings.toml or the README)"
        fail(message, EXIT_USAGE, "invalid_setting")


def configured(
    *, database: bool, redis: bool, logs: bool = True
) -> Callable[[Callable[Concatenate[Settings, P], T]], Callable[P, T]]:
    """Call with loaded settings (logging configured unless `logs` is False), once the URLs it
    needs are known set."""

    def decorate(command: Callable[Concatenate[Settings, P], T]) -> Callable[P, T]:
        @wraps(command)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            settings = settings_or_exit(logs=logs)
            require_urls(settings, database=database, redis=redis)
            return command(settings, *args, **kwargs)

        # Typer reads the options from the signature: the settings are not one of them.
        signature = inspect.signature(command, eval_str=True)
        parameters = list(signature.parameters.values())[1:]
        wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        return wrapper

    return decorate
