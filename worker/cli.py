"""`orderworker`, the one entry point. Exit codes: 0 success, 1 work failed, 2 bad usage/input."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from collections.abc import Callable, Coroutine
from datetime import timedelta
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, NoReturn, ParamSpec, TypeVar

import typer
import uvloop
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError

from jobs.connection import REDIS_ERRORS
from worker.settings import Settings, SettingsError, load_settings

P = ParamSpec("P")
T = TypeVar("T")

app = typer.Typer(
    help="Asynchronous order-processing worker: arq jobs in Redis, totals in PostgreSQL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema and sample data.", no_args_is_help=True)
order_app = typer.Typer(help="Orders through the queue.", no_args_is_help=True)
jobs_app = typer.Typer(help="Failed jobs (dead letters): list, retry, purge.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(order_app, name="order")
app.add_typer(jobs_app, name="jobs")

MAX_ORDER_ID = 2**63 - 1  # orders.id is a bigint
EXIT_FAILED = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """Bad usage or bad input: exit code 2 with one line on stderr."""


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    typer.echo(f"orderworker: {message}", err=True)
    raise typer.Exit(code)


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


def settings_or_exit(**overrides: object) -> Settings:
    try:
        settings = load_settings(**overrides)
    except SettingsError as error:
        fail(str(error))
    from worker.logs import configure_logging

    configure_logging(settings.log.level, settings.log.format)
    return settings


def require_urls(settings: Settings, *, database: bool = True, redis: bool = True) -> None:
    missing = []
    if database and settings.database_url is None:
        missing.append("ORDERWORKER_DATABASE_URL")
    if redis and settings.redis_url is None:
        missing.append("ORDERWORKER_REDIS_URL")
    if missing:
        fail(" and ".join(missing) + " not set (see settings.toml or the README)")


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


# ---------------------------------------------------------------- worker


@app.command()
@reports_errors
def worker(
    burst: Annotated[bool, typer.Option(help="Exit once the queue is empty.")] = False,
    concurrency: Annotated[
        int | None, typer.Option(min=1, max=1000, help="Jobs run at once by this replica.")
    ] = None,
) -> None:
    """Run one worker replica until SIGTERM/SIGINT (in-flight jobs drain first)."""
    settings = settings_or_exit()
    if concurrency is not None:
        settings = settings.model_copy(
            update={"worker": settings.worker.model_copy(update={"concurrency": concurrency})}
        )
    require_urls(settings)
    from worker.replica import StartupError, run_replica

    try:
        run_async(run_replica(settings, burst=burst))
    except StartupError as error:
        fail(str(error), EXIT_FAILED)


# ---------------------------------------------------------------- db


@db_app.command("upgrade")
@reports_errors
def db_upgrade() -> None:
    """Apply migrations (idempotent; safe to run from several replicas at once)."""
    settings = settings_or_exit()
    require_urls(settings, redis=False)
    from worker import commands

    revision = run_async(commands.upgrade(settings))
    typer.echo(f"database at revision {revision}")


@db_app.command("seed")
@reports_errors
def db_seed(
    orders: Annotated[int, typer.Option(min=0, help="Generated orders to add.")] = 0,
) -> None:
    """Load the seed service's sample data (orders 1-3), plus N generated orders."""
    settings = settings_or_exit()
    require_urls(settings, redis=False)
    from worker import commands

    total = run_async(commands.seed(settings, orders))
    typer.echo(f"sample data loaded; {orders} orders generated; {total} orders in all")


# ---------------------------------------------------------------- order


def parse_item(value: str) -> dict[str, int]:
    item_id, sep, quantity = value.partition(":")
    try:
        if not sep:
            raise ValueError
        return {"item_id": int(item_id), "quantity": int(quantity)}
    except ValueError:
        raise UsageError(f"--item {value!r}: expected ITEM_ID:QUANTITY, e.g. 3:2") from None


@order_app.command("place")
@reports_errors
def order_place(
    customer: Annotated[int, typer.Option(help="Customer id.")],
    item: Annotated[list[str], typer.Option(help="ITEM_ID:QUANTITY; repeat for more lines.")],
    idempotency_key: Annotated[str | None, typer.Option(help="Repeat-safe key.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds to wait.")] = 60.0,
) -> None:
    """Enqueue place_order, wait for it, print the order id and total."""
    from jobs.models import PlaceOrderPayload
    from jobs.runner import validation_message

    lines = [parse_item(value) for value in item]
    try:
        PlaceOrderPayload.model_validate(
            {"customer_id": customer, "items": lines, "idempotency_key": idempotency_key}
        )
    except ValidationError as error:
        raise UsageError(validation_message(error)) from None
    settings = settings_or_exit()
    require_urls(settings, database=False)
    from worker import commands

    outcome = run_async(commands.place_order(settings, customer, lines, idempotency_key, timeout))
    if as_json:
        body = (
            outcome.result
            if outcome.success
            else {"job_id": outcome.job_id, "error": outcome.result}
        )
        typer.echo(json.dumps(body))
    elif outcome.success:
        typer.echo(f"order {outcome.result['order_id']} placed, total {outcome.result['total']}")
    if not outcome.success:
        code = outcome.result.get("code", "")
        typer.echo(f"orderworker: {code}: {outcome.result.get('message')}", err=True)
        bad_input = code in {
            "invalid_payload",
            "unknown_customer",
            "unknown_item",
            "idempotency_conflict",
        }
        raise typer.Exit(EXIT_USAGE if bad_input else EXIT_FAILED)


# ---------------------------------------------------------------- totals


@app.command()
@reports_errors
def totals(
    order_ids: Annotated[
        list[int] | None, typer.Argument(help="Order ids.", show_default=False)
    ] = None,
    file: Annotated[
        str | None, typer.Option("--file", help="Read ids from PATH, or '-' for stdin.")
    ] = None,
    all_orders: Annotated[bool, typer.Option("--all", help="Every order, paged by id.")] = False,
    chunk_size: Annotated[int | None, typer.Option(min=1, max=100_000, help="Ids per job.")] = None,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Submit and exit.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
    timeout: Annotated[
        float | None, typer.Option(min=0.1, help="Give up waiting after this many seconds.")
    ] = None,
) -> None:
    """Submit batch totals as chunk jobs, show progress (stderr, TTY only), print a summary."""
    sources = sum([bool(order_ids), file is not None, all_orders])
    if sources != 1:
        raise UsageError("give order ids, --file PATH|- or --all (exactly one)")
    ids = list(order_ids or [])
    if file is not None:
        ids = read_ids(file)
        if not ids:
            raise UsageError(f"--file {file}: no order ids in it")
    ids = list(dict.fromkeys(ids))  # a repeated id is one order to total, counted once
    out_of_range = [order_id for order_id in ids if not 1 <= order_id <= MAX_ORDER_ID]
    if out_of_range:
        raise UsageError(f"{out_of_range[0]} is not an order id (1 to {MAX_ORDER_ID})")
    settings = settings_or_exit()
    require_urls(settings, database=all_orders)
    from worker import commands

    summary = run_async(
        commands.totals(
            settings,
            ids=None if all_orders else ids,
            chunk_size=chunk_size or settings.totals.chunk_size,
            wait=not no_wait,
            show_progress=sys.stderr.isatty() and not no_wait,
            timeout_s=timeout,
        )
    )
    if no_wait:
        submitted = f"batch {summary.batch_id}: {summary.requested} orders in {summary.jobs} jobs"
        typer.echo(f"{submitted} submitted", err=as_json)
    if as_json:
        typer.echo(json.dumps(summary.as_json()))
    elif not no_wait:
        typer.echo(commands.describe_batch(summary))
    if not summary.ok:
        raise typer.Exit(EXIT_FAILED)


def read_ids(source: str) -> list[int]:
    stream = sys.stdin if source == "-" else None
    try:
        text_in = stream.read() if stream is not None else Path(source).read_text()
    except OSError as error:
        raise UsageError(f"--file {source}: {error.strerror}") from None
    ids = []
    for number, line in enumerate(text_in.splitlines(), start=1):
        for token in line.replace(",", " ").split():
            if not token.isdigit() or int(token) < 1:
                raise UsageError(f"--file {source}, line {number}: {token!r} is not an order id")
            ids.append(int(token))
    return ids


# ---------------------------------------------------------------- jobs (dead letters)


@jobs_app.command("failed")
@reports_errors
def jobs_failed(
    limit: Annotated[int, typer.Option(min=1, help="Most recent N.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """List failed jobs, most recent first."""
    settings = settings_or_exit()
    require_urls(settings, redis=False)
    from worker import commands

    failures = run_async(commands.list_failed(settings, limit))
    if as_json:
        typer.echo(json.dumps({"failed": failures}))
        return
    for failure in failures:
        error = failure["error"]
        typer.echo(
            f"{failure['job_id']}  {failure['function']}  tries={failure['tries']}  "
            f"{error['code']}: {error['message']}"
        )
    if not failures:
        typer.echo("no failed jobs", err=True)


@jobs_app.command("retry")
@reports_errors
def jobs_retry(
    job_ids: Annotated[list[str] | None, typer.Argument(help="Failed job ids.")] = None,
    all_jobs: Annotated[bool, typer.Option("--all", help="Every failed job.")] = False,
) -> None:
    """Enqueue failed jobs again (under new job ids) and remove them from the failed list."""
    if bool(job_ids) == all_jobs:
        raise UsageError("give failed job ids or --all (exactly one)")
    settings = settings_or_exit()
    require_urls(settings)
    from worker import commands

    requeued = run_async(commands.retry_failed(settings, None if all_jobs else job_ids))
    typer.echo(f"{len(requeued)} jobs enqueued again")
    if job_ids and len(requeued) < len(job_ids):
        typer.echo("some ids were not failed jobs, or had no replayable payload", err=True)
        raise typer.Exit(EXIT_FAILED)


@jobs_app.command("purge")
@reports_errors
def jobs_purge(
    older_than_days: Annotated[float, typer.Option(min=0, help="Age in days.")] = 30.0,
) -> None:
    """Delete failed-job records older than N days."""
    settings = settings_or_exit()
    require_urls(settings, redis=False)
    from worker import commands

    removed = run_async(commands.purge_failed(settings, timedelta(days=older_than_days)))
    typer.echo(f"{removed} failed-job records purged")


# ---------------------------------------------------------------- health, demo


@app.command()
@reports_errors
def health(
    as_json: Annotated[bool, typer.Option("--json", help="List replicas as JSON.")] = False,
    local: Annotated[
        bool, typer.Option("--local", help="Only replicas on this host (container healthchecks).")
    ] = False,
) -> None:
    """Exit 0 if a live worker replica is reporting, 1 otherwise."""
    settings = settings_or_exit()
    require_urls(settings, database=False)
    from worker import commands

    replicas = run_async(commands.replicas(settings))
    if local:
        replicas = [replica for replica in replicas if replica["host"] == socket.gethostname()]
    if as_json:
        typer.echo(json.dumps({"healthy": bool(replicas), "replicas": replicas}))
    else:
        for replica in replicas:
            typer.echo(
                f"{replica['replica_id']}: {replica['jobs_done']} done, "
                f"{replica['in_flight']} in flight, {replica['jobs_failed']} failed"
            )
        if not replicas:
            typer.echo("no live worker replica", err=True)
    raise typer.Exit(0 if replicas else EXIT_FAILED)


@app.command()
@reports_errors
def demo(
    orders: Annotated[int, typer.Option(min=0, help="Generated orders to total.")] = 10_000,
) -> None:
    """The whole pipeline end to end, on a private local stack unless URLs are configured."""
    settings = settings_or_exit()
    from worker.demo import run_demo

    raise typer.Exit(run_demo(settings, orders))
