"""The product's own measurements, each through real processes: `orderworker totals --all` against
worker replicas, single jobs drained by one replica (and by a bare arq worker), the CLI's submit
rate; and the reference for batches, the database's own one-statement limit. Every measurement
starts from an empty order_totals and ends with a SQL check."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from decimal import Decimal

from redis.asyncio import Redis
from sqlalchemy import text

from bench.stack import Bench, clear_queue_keys, truncate_totals
from db.engine import create_sessionmaker
from db.order_ids import order_id_pages
from db.totals import (
    INSERT_ORDER_TOTALS,
    ON_CONFLICT_UPDATE_TOTAL,
    SELECT_ORDER_TOTALS,
    upsert_totals,
)
from jobs.lanes import lane_queue
from worker.harness.checks import TotalsCheck, check_totals

# The product's computation over all orders in one statement: what PostgreSQL alone does.
SQL_LIMIT = text(
    f"{INSERT_ORDER_TOTALS} {SELECT_ORDER_TOTALS} GROUP BY o.id {ON_CONFLICT_UPDATE_TOTAL}"
)


@dataclass(slots=True)
class Outcome:
    """One measured run: how many, how long, what it cost in memory, and whether it was right."""

    count: int
    seconds: float
    verification: TotalsCheck | None = None
    worker_rss_mib: list[float] = field(default_factory=list)
    worker_cpu_s: list[float] = field(default_factory=list)  # user + system, whole process life
    cli_rss_mib: float | None = None
    steady_seconds: float | None = None  # first result to last, when results are polled
    startup_cpu_s: float = 0.0  # the worker's CPU until its first result, when polled
    redis_commands: int | None = None  # processed by Redis while the jobs drained
    note: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    @property
    def ok(self) -> bool:
        verified = self.verification is None or self.verification.ok
        return verified and not self.problems


async def sql_limit(bench: Bench) -> Outcome:
    """The database alone computing and upserting every order's total, timed and checked."""
    await truncate_totals(bench.engine)
    async with bench.engine.begin() as connection:
        started = time.perf_counter()
        await connection.execute(SQL_LIMIT)
    seconds = time.perf_counter() - started
    check = await check_totals(bench.engine, bench.first_id, bench.last_id)
    return Outcome(bench.orders, seconds, verification=check)


async def batch_totals(bench: Bench, replicas: int) -> Outcome:
    """`orderworker totals --all --json` against `replicas` running workers; timed as the CLI."""
    label = f"batch-{replicas}r"
    queue = bench.queue(label)
    await truncate_totals(bench.engine)
    workers = await bench.start_replicas(label, queue, replicas)
    try:
        spawned = time.time()
        finished, summary = await bench.cli(f"{label}-cli", queue, "totals", "--all")
    finally:
        stopped = await asyncio.gather(*(worker.stop() for worker in workers))
    if finished.returncode != 0 or summary["failed"] or summary["computed"] != bench.orders:
        raise RuntimeError(f"{label}: exit {finished.returncode}, summary {str(summary)[:500]}")
    verification = await check_totals(bench.engine, bench.first_id, bench.last_id)
    timeline = await chunk_timeline(bench.redis, summary["batch_id"], spawned, finished.seconds)
    await clear_queue_keys(bench.redis, queue, [], [summary["batch_id"]])
    problems = []
    if Decimal(summary["total_sum"]) != verification.expected_sum:
        problems.append(f"total_sum {summary['total_sum']} != {verification.expected_sum}")
    return Outcome(
        count=summary["computed"],
        seconds=finished.seconds,
        verification=verification,
        worker_rss_mib=[worker.peak_rss_mib for worker in stopped],
        worker_cpu_s=[worker.cpu_seconds for worker in stopped],
        cli_rss_mib=finished.peak_rss_mib,
        note=timeline,
        problems=problems,
    )


async def chunk_timeline(redis: Redis, batch_id: str, spawned: float, seconds: float) -> str:
    """Where a CLI run's time went, from its chunks' results (arq's enqueue and finish times, ms
    since the epoch): its start-up until the first chunk was queued, and its end after the last
    chunk was done."""
    keys = [key async for key in redis.scan_iter(match=f"arq:result:totals:{batch_id}:*")]
    results = [json.loads(raw) for raw in await redis.mget(keys) if raw is not None]
    if not results:
        return "no chunk results left to time"
    first_queued = min(result["et"] for result in results) / 1000 - spawned
    last_done = max(result["ft"] for result in results) / 1000 - spawned
    return (
        f"first chunk queued {first_queued:.2f}s after the CLI's spawn, last one done at"
        f" {last_done:.2f}s, exit at {seconds:.2f}s"
    )


async def subchunk_ceiling(bench: Bench, connections: int, size: int) -> Outcome:
    """The replicas' statement (db.totals.upsert_totals; theirs also records the sub-chunk for its
    batch, at the same cost) over every order in sub-chunks of `size`, sent by this process on
    `connections` sessions at once: no queue, no replica, no CLI. What computing a batch as
    parallel set-based statements can reach on this machine."""
    await truncate_totals(bench.engine)
    subchunks = [page async for page in order_id_pages(bench.engine, size)]
    # Each statement its own transaction, on sessions of an AUTOCOMMIT engine, as in a replica.
    sessions = create_sessionmaker(bench.engine.execution_options(isolation_level="AUTOCOMMIT"))

    async def send() -> None:
        while subchunks:
            async with sessions() as session:
                await upsert_totals(session, subchunks.pop())

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(connections):
            group.create_task(send())
    seconds = time.perf_counter() - started
    check = await check_totals(bench.engine, bench.first_id, bench.last_id)
    return Outcome(bench.orders, seconds, verification=check)


async def cli_submit(bench: Bench) -> Outcome:
    """`totals --all --no-wait --json` with no worker: keyset paging plus pipelined enqueue."""
    queue = bench.queue("submit")
    finished, summary = await bench.cli("submit-cli", queue, "totals", "--all", "--no-wait")
    queued = int(await bench.redis.zcard(lane_queue(queue, "batch")))
    await clear_queue_keys(bench.redis, queue, [], [summary["batch_id"]])
    if finished.returncode != 0 or summary["requested"] != bench.orders or not queued:
        raise RuntimeError(f"submit: exit {finished.returncode}, {queued} queued, {summary}")
    return Outcome(
        count=summary["requested"],
        seconds=finished.seconds,
        cli_rss_mib=finished.peak_rss_mib,
        note=f"{queued} chunk jobs queued",
    )
