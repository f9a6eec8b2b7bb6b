"""What `orderworker health` reads with the settings: the replicas reporting in Redis, and the
readiness of PostgreSQL and Redis (worker/readiness.py)."""

from __future__ import annotations

import json
import socket
from typing import Any

import typer
from redis.exceptions import RedisError

from jobs.connection import redis_settings_from_url
from worker import health as heartbeats
from worker.cli.exits import EXIT_FAILED, error_field
from worker.cli.runtime import configured, run_async
from worker.readiness import Check, readiness, redis_connection
from worker.settings import Settings

NO_REPLICA = "no_live_replica"  # health's failure: nothing reports, so nothing runs the jobs


# No logging set up: these only print, and structlog would be a fifth of their start-up.
@configured(database=False, redis=True, logs=False)
def report_replicas(settings: Settings, as_json: bool, local: bool) -> None:
    replicas = run_async(live_replicas(settings))
    if local:
        replicas = [replica for replica in replicas if replica["host"] == socket.gethostname()]
    if as_json:
        failure = {} if replicas else error_field(NO_REPLICA, "no live worker replica")
        typer.echo(json.dumps({"healthy": bool(replicas), "replicas": replicas, **failure}))
    else:
        for replica in replicas:
            typer.echo(
                f"{replica['replica_id']}: {replica['jobs_done']} done, "
                f"{replica['in_flight']} in flight, {replica['jobs_failed']} failed"
            )
    if not replicas:
        typer.echo(f"orderworker: {NO_REPLICA}: no live worker replica", err=True)
    raise typer.Exit(0 if replicas else EXIT_FAILED)


@configured(database=True, redis=True, logs=False)
def check_readiness(settings: Settings) -> list[Check]:
    return run_async(readiness(settings.database_dsn(), settings.redis_dsn()))


async def live_replicas(settings: Settings) -> list[dict[str, Any]]:
    # No connection retries: a probe answers now, and its orchestrator asks again.
    try:
        async with redis_connection(settings.redis_dsn(), conn_retries=0) as redis:
            return await heartbeats.live_replicas(redis, settings.queue_name)
    except RedisError as error:
        from worker.cli.failures import redis_error  # only once something failed

        raise redis_error(error, redis_settings_from_url(settings.redis_dsn())) from error
