"""`orderworker totals status BATCH_ID`: how a batch stands, from PostgreSQL; and the `totals`
group, where `totals ORDER_ID...` is the submitting command and `totals status` this one."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from typing import Annotated, Any

import typer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from typer.core import TyperCommand, TyperGroup

from db.batches import BatchStatus, batch_status, unfinished_chunks
from db.engine import create_sessionmaker
from jobs.batches import LOST_CHECK_S
from jobs.client import OrderClient
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
from worker.cli.totals_lines import describe_lost, describe_status, failed_chunk
from worker.settings import Settings

SUBMIT = "submit"  # the hidden name of `totals ORDER_ID...`
STATUS_POLL_S = 0.5  # a waiting status reads the database this often
UNKNOWN_BATCH = "unknown_batch"  # no batch has the id given
SUBMITTED_QUIET_S = 5.0  # chunks are looked for in Redis once their submission is this old


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
        reading = run_async(read_status(settings, batch_id, wait, timeout))
    except KeyboardInterrupt:
        fail(f"batch {batch_id} is not affected", EXIT_INTERRUPTED)
    status = reading.status
    if status is None:
        message = f"no batch {batch_id!r} (its id is printed by `orderworker totals`)"
        raise UsageError(message, UNKNOWN_BATCH)
    if as_json:
        typer.echo(json.dumps(status.as_json()))
    else:
        typer.echo(describe_status(status))
        for failure in status.failed:
            typer.echo(f"  failed: {failed_chunk(failure)}")
    if reading.lost:
        lost = describe_lost(batch_id, len(reading.lost), reading.lost[0])
        typer.echo(f"orderworker: warning: {lost}", err=True)
    elif wait and not status.finished:
        typer.echo(f"orderworker: timeout: batch {batch_id} not done within {timeout:g}s", err=True)
    if status.state == "failed" or (wait and not status.finished):
        raise typer.Exit(EXIT_FAILED)


@dataclass(slots=True)
class Reading:
    status: BatchStatus | None
    lost: list[str] = field(default_factory=list)  # unfinished chunks Redis no longer holds


async def read_status(
    settings: Settings, batch_id: str, wait: bool, timeout_s: float | None
) -> Reading:
    """The batch's status; with `wait`, once it is done, cannot be (chunks lost), or the timeout
    ran out."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    async with database(settings) as engine, contextlib.AsyncExitStack() as stack:
        sessions = create_sessionmaker(engine)
        client: OrderClient | None = None
        tried_redis, lost_checked = False, -math.inf
        while True:
            async with sessions() as session:
                reading = Reading(await batch_status(session, batch_id))
            if reading.status is None or reading.status.finished:
                return reading
            if not tried_redis and settings.redis_url is not None:
                tried_redis = True  # once: an unreachable Redis only costs the hints
                client = await redis_client(settings, stack)
                if client is not None and wait:  # it will wait: is anything running?
                    await stack.enter_async_context(warn_without_replicas(client))
            if client is not None and time.monotonic() - lost_checked >= LOST_CHECK_S:
                reading.lost = await lost_chunks(client, sessions, batch_id)
                lost_checked = time.monotonic()
            remaining = STATUS_POLL_S if deadline is None else deadline - time.monotonic()
            if not wait or reading.lost or remaining <= 0:
                return reading
            await asyncio.sleep(min(STATUS_POLL_S, remaining))


async def redis_client(settings: Settings, stack: contextlib.AsyncExitStack) -> OrderClient | None:
    """The producer, for hints only: Redis may be down (the producer reports that as a
    CommandError), and the status comes from PostgreSQL anyway."""
    with contextlib.suppress(*REDIS_ERRORS, CommandError):
        return await stack.enter_async_context(producer(settings))
    return None


async def lost_chunks(
    client: OrderClient, sessions: async_sessionmaker[AsyncSession], batch_id: str
) -> list[str]:
    """Unfinished chunk jobs that Redis holds neither queued nor finished: they will never run
    (their keys expired, or went with Redis's data). A hint, so a Redis error means none."""
    async with sessions() as session:
        unfinished = await unfinished_chunks(session, batch_id, SUBMITTED_QUIET_S)
    with contextlib.suppress(*REDIS_ERRORS):  # TimeoutError among them
        async with asyncio.timeout(LOST_CHECK_S):  # a frozen Redis answers nothing
            return await client.unknown(unfinished)
    return []
