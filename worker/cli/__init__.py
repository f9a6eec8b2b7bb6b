"""`orderworker`, the one entry point. Exit codes: 0 success, 1 work failed, 2 bad usage/input."""

from __future__ import annotations

import typer

from worker.cli import demo, health, worker
from worker.cli.db import db_app
from worker.cli.jobs import jobs_app
from worker.cli.order import order_app
from worker.cli.totals_status import totals_app

app = typer.Typer(
    help="Asynchronous order-processing worker: arq jobs in Redis, totals in PostgreSQL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("worker")(worker.worker)
app.command("health")(health.health)
app.command("demo")(demo.demo)
app.add_typer(db_app, name="db")
app.add_typer(order_app, name="order")
app.add_typer(totals_app, name="totals")
app.add_typer(jobs_app, name="jobs")
