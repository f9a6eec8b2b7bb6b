"""`orderworker health`: is a live replica reporting?"""

from __future__ import annotations

import json
import socket
from typing import Annotated, Any

import typer

from worker import health as heartbeats
from worker.cli.exits import EXIT_FAILED, reports_errors
from worker.cli.resources import producer
from worker.cli.runtime import configured, run_async
from worker.settings import Settings


@reports_errors
@configured(database=False, redis=True)
def health(
    settings: Settings,
    as_json: Annotated[bool, typer.Option("--json", help="List replicas as JSON.")] = False,
    local: Annotated[
        bool, typer.Option("--local", help="Only replicas on this host (container healthchecks).")
    ] = False,
) -> None:
    """Exit 0 if a live worker replica is reporting, 1 otherwise."""
    replicas = run_async(live_replicas(settings))
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


async def live_replicas(settings: Settings) -> list[dict[str, Any]]:
    async with producer(settings) as client:
        return await heartbeats.live_replicas(client.redis, settings.queue_name)
