"""`orderworker worker`: run one replica."""

from __future__ import annotations

from typing import Annotated

import typer

from worker.cli.exits import EXIT_FAILED, fail, reports_errors
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
    except StartupError as error:
        fail(str(error), EXIT_FAILED)
