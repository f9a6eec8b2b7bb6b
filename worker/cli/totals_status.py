"""`orderworker totals status BATCH_ID`: how a batch stands, from PostgreSQL; and the `totals`
group, where `totals ORDER_ID...` is the submitting command and `totals status` this one."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from db.batches import BatchStatus, batch_status
from db.engine import create_sessionmaker
from jobs.connection import REDIS_ERRORS
from worker.cli.exits import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    CommandError,
    UsageError,
    fail,
    reports_errors,
)
from worker.cli.resources import database, producer
from worker.cli.runtime import configured, run_async
from worker.cli.totals import totals, warn_without_replicas
from worker.settings import Settings

SUBMIT = "submit"  # the hidden name of `totals ORDER_ID...`
STATUS_POLL_S = 0.5  # a waiting status reads the database this often
UNKNOWN_BATCH = "unknown_batch"  # no batch has the id given


class TotalsGroup(TyperGroup):
    """`totals status ...` is the status command; anything else is `totals` submitting ids."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # ctx: Typer's click Context
        if not args or args[0] not in self.commands:
            args = [SUBMIT, *args]
        return super().parse_args(ctx, args)


class SubmitContext(typer.Context):
    @property
    def command_path(self) -> str:
        # Usage lines and errors read `orderworker totals [OPTIONS] ...`, not `... totals submit`.
        return self.parent.command_path if self.parent is not None else super().command_path


class SubmitCommand(TyperCommand):
    context_class = SubmitContext


totals_app = typer.Typer(
    cls=TotalsGroup, help="Submit batch totals as chunk jobs, or look a batch up (totals status)."
)
totals_app.command(SUBMIT, hidden=True, cls=SubmitCommand)(totals)


@totals_app.command("status")
@reports_errors
@configured(database=True, redis=False)
def totals_status(
    settings: Settings,
    batch_id: Annotated[str, typer.Argument(help="A batch id, as `totals` printed it.")],
    wait: Annotated[bool, typer.Option("--wait", help="Until the batch is done.")] = False,
    timeout: Annotated[
        float | None, typer.Option(min=0.1, help="Give up waiting after this many seconds.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """How a batch stands (or ended), from PostgreSQL, long after its results left Redis."""
    try:
        status = run_async(read_status(settings, batch_id, wait, timeout))
    except KeyboardInterrupt:
        fail(f"batch {batch_id} is not affected", EXIT_INTERRUPTED)
    if status is None:
        message = f"no batch {batch_id!r} (its id is printed by `orderworker totals`)"
        raise UsageError(message, UNKNOWN_BATCH)
    if as_json:
        typer.echo(json.dumps(status.as_json()))
    else:
        typer.echo(describe_status(status))
        for failure in status.failed:
            typer.echo(f"  failed: {failed_chunk(failure)}")
    if wait and not status.finished:
        typer.echo(f"orderworker: timeout: batch {batch_id} not done within {timeout:g}s", err=True)
    if status.state == "failed" or (wait and not status.finished):
        raise typer.Exit(EXIT_FAILED)


async def read_status(
    settings: Settings, batch_id: str, wait: bool, timeout_s: float | None
) -> BatchStatus | None:
    """The batch's status; with `wait`, once it is done (or the timeout ran out)."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    async with database(settings) as engine, contextlib.AsyncExitStack() as stack:
        sessions = create_sessionmaker(engine)
        watching = False
        while True:
            async with sessions() as session:
                status = await batch_status(session, batch_id)
            if status is None or status.finished or not wait:
                return status
            remaining = STATUS_POLL_S if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return status
            if not watching and settings.redis_url is not None:
                await warn_while_waiting(settings, stack)  # it will wait: is anything running?
                watching = True
            await asyncio.sleep(min(STATUS_POLL_S, remaining))


async def warn_while_waiting(settings: Settings, stack: contextlib.AsyncExitStack) -> None:
    """As `totals` does: one line if no replica reports. Only a hint: Redis may be down (the
    producer reports that as a CommandError), and the status comes from PostgreSQL anyway."""
    with contextlib.suppress(*REDIS_ERRORS, CommandError):
        client = await stack.enter_async_context(producer(settings))
        await stack.enter_async_context(warn_without_replicas(client))


def describe_status(status: BatchStatus) -> str:
    return (
        f"batch {status.batch_id}: {status.state}, {status.requested} requested, "
        f"{status.computed} computed, {len(status.missing)} missing, "
        f"{len(status.failed)} failed jobs, total_sum {status.total_sum:.2f}"
    )


def failed_chunk(failure: dict[str, Any]) -> str:
    where = failure.get("job_id") or "orders " + ", ".join(map(str, failure["order_ids"]))
    return f"{where}: {failure['error']['code']}: {failure['error']['message']}"
