"""`orderworker`, the one entry point. Exit codes: 0 success, 1 work failed, 2 bad usage/input."""

from __future__ import annotations

import sys

import typer

from worker.cli import demo, health, totals, worker
from worker.cli.db import db_app
from worker.cli.exits import run_command
from worker.cli.jobs import jobs_app
from worker.cli.order import order_app

app = typer.Typer(
    help="Asynchronous order-processing worker: arq jobs in Redis, totals in PostgreSQL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("worker")(worker.worker)
app.command("totals")(totals.totals)
app.command("health")(health.health)
app.command("demo")(demo.demo)
app.add_typer(db_app, name="db")
app.add_typer(order_app, name="order")
app.add_typer(jobs_app, name="jobs")


def main() -> None:
    """The `orderworker` command: usage errors are one line, not Typer's boxes."""
    sys.exit(run_command(typer.main.get_command(app)))
