"""`orderworker status`: the fleet at a glance, once, as JSON, or redrawn every second."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any

import typer
from redis.asyncio import Redis
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text
from sqlalchemy.ext.asyncio import AsyncEngine

from db import failed_jobs
from db.batches import BatchStatus, running_batches
from db.engine import create_sessionmaker
from worker import health
from worker.cli.exits import UsageError, reports_errors
from worker.cli.resources import database, producer
from worker.cli.runtime import configured, run_async
from worker.queue_depth import QueueDepth, read_queue_depth
from worker.settings import Settings

WATCH_EVERY_S = 1.0
FAILURES_WITHIN = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class FleetStatus:
    queue_name: str
    depth: QueueDepth
    replicas: list[dict[str, Any]]  # heartbeats (worker/health.py), oldest replica first
    failures: dict[str, int]  # failed jobs of the last hour, by error code
    batches: list[BatchStatus]  # queued and running, newest first (db/batches.py)
    read_at: float

    def as_json(self) -> dict[str, Any]:
        return {
            "queue": {"name": self.queue_name, **self.depth.as_json()},
            "replicas": [_replica_json(beat, self.read_at) for beat in self.replicas],
            "failed_last_hour": self.failures,
            "running_batches": [_batch_json(batch, self.read_at) for batch in self.batches],
        }


@reports_errors
@configured(database=True, redis=True)
def status(
    settings: Settings,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="Redraw every second until Ctrl-C.")] = (
        False
    ),
) -> None:
    """The fleet at a glance: queue, replicas, failures of the last hour, running batches."""
    if as_json and watch:
        raise UsageError("--watch redraws for a terminal; use --json without it")
    if watch:
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a watch ends
            run_async(watch_fleet(settings))
        return
    fleet = run_async(read_fleet_once(settings))
    if as_json:
        typer.echo(json.dumps(fleet.as_json()))
    else:
        Console().print(render(fleet))


async def read_fleet_once(settings: Settings) -> FleetStatus:
    async with database(settings) as engine, producer(settings) as client:
        return await read_fleet(settings.queue_name, engine, client.redis)


async def watch_fleet(settings: Settings) -> None:
    async with database(settings) as engine, producer(settings) as client:
        with Live(auto_refresh=False) as live:
            while True:
                fleet = await read_fleet(settings.queue_name, engine, client.redis)
                live.update(render(fleet), refresh=True)
                await asyncio.sleep(WATCH_EVERY_S)


async def read_fleet(queue_name: str, engine: AsyncEngine, redis: Redis) -> FleetStatus:
    depth = await read_queue_depth(redis, queue_name)
    replicas = await health.live_replicas(redis, queue_name)
    sessions = create_sessionmaker(engine)
    async with sessions() as session:
        failures = await failed_jobs.failure_counts_since(session, FAILURES_WITHIN)
    async with sessions() as session:
        batches = await running_batches(session)
    return FleetStatus(queue_name, depth, replicas, failures, batches, time.time())


def _batch_json(batch: BatchStatus, now: float) -> dict[str, Any]:
    submitted = batch.submitted_at.timestamp() if batch.submitted_at else now
    return {
        "batch_id": batch.batch_id,
        "state": batch.state,
        "requested": batch.requested,
        "computed": batch.computed,
        "chunks_done": batch.chunks_done,
        "chunks": batch.chunks,
        "age_s": round(max(0.0, now - submitted), 1),
    }


def _replica_json(beat: dict[str, Any], now: float) -> dict[str, Any]:
    return {
        "replica_id": beat["replica_id"],
        "host": beat["host"],
        "pid": beat["pid"],
        "lanes": beat.get("lanes", {}),
        "in_flight": beat["in_flight"],
        "jobs_done": beat["jobs_done"],
        "jobs_failed": beat["jobs_failed"],
        "jobs_retried": beat["jobs_retried"],
        "last_beat_age_s": round(max(0.0, now - beat["last_beat"]), 1),
        "up_s": round(max(0.0, now - beat["started_at"]), 1),
    }


def render(fleet: FleetStatus) -> RenderableType:
    depth = fleet.depth
    queue = Table(title=f"queue {fleet.queue_name}", title_justify="left", box=None)
    for column in ("lane", "ready", "deferred", "in progress", "oldest ready"):
        queue.add_column(column, justify="left" if column == "lane" else "right")
    rows: list[tuple[str, int, int, int, float]]
    rows = [(name, lane.ready, lane.deferred, lane.in_progress, lane.oldest_ready_age_s)
            for name, lane in depth.lanes.items()]  # fmt: skip
    rows.append(("both", depth.ready, depth.deferred, depth.in_progress, depth.oldest_ready_age_s))
    for name, ready, deferred, in_progress, age_s in rows:
        queue.add_row(name, str(ready), str(deferred), str(in_progress), f"{age_s:.1f}s")
    count = len(fleet.replicas)
    title = f"{count} replica{'' if count == 1 else 's'}"
    replicas = Table(title=title, title_justify="left", box=None)
    # No host column: a replica's id starts with its host (a pod's name), and long ones would not
    # fit 80 columns twice. `--json` has both.
    columns = ("replica", "interactive", "batch", "in flight", "done", "failed", "beat")
    for column in columns:
        replicas.add_column(column, justify="left" if column == "replica" else "right")
    for beat in fleet.as_json()["replicas"]:
        lanes = beat["lanes"]
        replicas.add_row(
            beat["replica_id"], _slots(lanes.get("interactive")),
            _slots(lanes.get("batch")), str(beat["in_flight"]), str(beat["jobs_done"]),
            str(beat["jobs_failed"]), f"{beat['last_beat_age_s']:.1f}s ago",
        )  # fmt: skip
    failures = ", ".join(f"{code} {count}" for code, count in fleet.failures.items()) or "none"
    return Group(
        queue,
        Text(""),
        replicas,
        Text(f"\nfailed jobs, last hour: {failures}"),
        *((Text(""), _batches_table(fleet)) if fleet.batches else (Text("running batches: none"),)),
    )


def _batches_table(fleet: FleetStatus) -> Table:
    count = len(fleet.batches)
    title = f"{count} running batch{'' if count == 1 else 'es'}"
    batches = Table(title=title, title_justify="left", box=None)
    for column in ("batch", "state", "requested", "computed", "chunks", "age"):
        batches.add_column(column, justify="left" if column in ("batch", "state") else "right")
    for batch in fleet.as_json()["running_batches"]:
        batches.add_row(
            batch["batch_id"], batch["state"], str(batch["requested"]), str(batch["computed"]),
            f"{batch['chunks_done']}/{batch['chunks']}", f"{batch['age_s']:.0f}s",
        )  # fmt: skip
    return batches


def _slots(lane: dict[str, int] | None) -> str:
    return "-" if not lane else f"{lane['in_use']}/{lane['slots']}"
