"""What `orderworker health` reads with the settings: the replicas reporting in Redis, and the
readiness of PostgreSQL and Redis (worker/readiness.py)."""

from __future__ import annotations

import json
import socket
from typing import Any

import typer

from worker import health as heartbeats
from worker.cli.exits import EXIT_FAILED
from worker.cli.runtime import configured, run_async
from worker.readiness import Check, readiness, redis_connection
from worker.settings import Settings


# No logging set up: these only print, and structlog would be a fifth of their start-up.
@configured(database=False, redis=True, logs=False)
def report_replicas(settings: Settings, as_json: bool, local: bool) -> None:
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


@configured(database=True, redis=True, logs=False)
def check_readiness(settings: Settings) -> list[Check]:
    return run_async(readiness(settings.database_dsn(), settings.redis_dsn()))


async def live_replicas(settings: Settings) -> list[dict[str, Any]]:
    # No connection retries: a probe answers now, and its orchestrator asks again.
    async with redis_connection(settings.redis_dsn(), conn_retries=0) as redis:
        return await heartbeats.live_replicas(redis, settings.queue_name)
