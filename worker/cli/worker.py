"""`orderworker worker`: run one replica."""

from __future__ import annotations

from typing import Annotated

import typer
from redis.exceptions import RedisError

from jobs.connection import redis_settings_from_url
from worker.cli.exits import EXIT_FAILED, EXIT_USAGE, fail, reports_errors
from worker.cli.runtime import configured, run_async
from worker.replica import StartupError, run_replica
from worker.settings import Settings


@reports_errors
@configured(database=True, redis=True)
def worker(
    settings: Settings,
    burst: Annotated[bool, typer.Option(help="Exit once the queue is empty.")] = False,
    concurrency: Annotated[
        int | None, typer.Option(min=1, max=1000, help="Jobs run at once by this replica.")
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(min=0, max=65535, help="Serve Prometheus /metrics here; 0 turns it off."),
    ] = None,
) -> None:
    """Run one worker replica until SIGTERM/SIGINT (in-flight jobs drain first)."""
    given = {"concurrency": concurrency, "metrics_port": metrics_port}
    update = {name: value for name, value in given.items() if value is not None}
    if update:
        settings = settings.model_copy(update={"worker": settings.worker.model_copy(update=update)})
    try:
        run_async(run_replica(settings, burst=burst))
    except RedisError as error:
        from worker.cli.failures import redis_error  # only once something failed

        raise redis_error(error, redis_settings_from_url(settings.redis_dsn())) from error
    except StartupError as error:
        exit_code = EXIT_USAGE if error.code == "invalid_setting" else EXIT_FAILED
        fail(str(error), exit_code, error.code)
