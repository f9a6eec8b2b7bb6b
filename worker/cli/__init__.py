"""`orderworker`, the one entry point. Exit codes: 0 success, 1 work failed, 2 bad usage/input.

Each command's module is imported only when that command runs (worker/cli/lazy_group.py): the
table names it and holds the line `orderworker --help` shows for it (its docstring's first)."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Mapping
from typing import ClassVar

import typer

from worker.cli.exits import run_command
from worker.cli.lazy_group import LazyCommand, LazyGroup

COMMANDS = {
    "worker": LazyCommand(
        "worker.cli.worker:worker",
        "Run one worker replica until SIGTERM/SIGINT (in-flight jobs drain first).",
    ),
    "totals": LazyCommand(
        "worker.cli.totals_status:totals_app",
        "Submit batch totals as chunk jobs, or look a batch up (totals status).",
    ),
    "health": LazyCommand(
        "worker.cli.health:health", "Exit 0 if a live worker replica is reporting, 1 otherwise."
    ),
    "status": LazyCommand(
        "worker.cli.status:status",
        "The fleet at a glance: queue, replicas, failures of the last hour, running batches.",
    ),
    "demo": LazyCommand(
        "worker.cli.demo:demo",
        "The whole pipeline end to end, on a private local stack unless URLs are configured.",
    ),
    "db": LazyCommand("worker.cli.db:db_app", "Database schema and sample data."),
    "order": LazyCommand("worker.cli.order:order_app", "Orders through the queue."),
    "jobs": LazyCommand(
        "worker.cli.jobs:jobs_app", "Failed jobs (dead letters): list, retry, purge."
    ),
}


class Commands(LazyGroup):
    table: ClassVar[Mapping[str, LazyCommand]] = COMMANDS


app = typer.Typer(
    cls=Commands,
    help="Asynchronous order-processing worker: arq jobs in Redis, totals in PostgreSQL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain text for this list: Rich's help formatter alone would double its start-up time. Each
    # command's own help keeps Rich's panels (lazy_group.py).
    rich_markup_mode=None,
)


@app.callback()
def root() -> None:
    # A callback makes the app a group, whose commands come from the table. It has no options.
    pass


def main() -> None:
    """The `orderworker` command: usage errors are one line, not Typer's boxes."""
    code = run_command(typer.main.get_command(app))
    # The interpreter's teardown frees every object SQLAlchemy, pydantic and arq built: 0.3 s on
    # a 2-core machine, after the command's work is done and its connections are closed.
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        # A reader that left (or a stream closed from the start): nothing more to tell it.
        with contextlib.suppress(BrokenPipeError, AttributeError):
            stream.flush()
    os._exit(code)
