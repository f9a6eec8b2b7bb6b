"""What one single-order job costs in each layer, in-process and one call at a time: the product's
database path, the same with and without its round trips, SQLAlchemy Core, asyncpg alone, and the
job wrapper (jobs/runner.py) with and without its log line. CPU per call is this process's CPU
time; wall per call adds the database's own work and the round trips. Layers take turns in small
rounds, so a burst of load elsewhere on the machine spreads over all of them."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bench.baselines import truncate_totals
from bench.measure import Bench
from db import totals
from db.engine import create_engine, create_sessionmaker
from db.totals import UPSERT_ONE_TOTAL, UPSERT_ONE_TOTAL_DRIVER_SQL
from jobs import runner
from jobs.context import JobPolicy
from jobs.models import ComputeOrderTotalPayload, OrderTotalResult
from jobs.runner import job_entry
from worker.logs import configure_logging

OPERATIONS = 2_000
Operation = Callable[[int], Awaitable[Any]]


ROUNDS = 10
Timings = list[tuple[str, float, float]]  # (layer, CPU ms per call, wall ms per call)


async def _interleaved(layers: list[tuple[str, Operation]], first_id: int = 1) -> Timings:
    """Each layer's CPU and wall time per call, layers taking turns in ROUNDS rounds; every layer
    is called with the same order ids, from `first_id` on."""
    cpu = dict.fromkeys((name for name, _ in layers), 0.0)
    wall = dict.fromkeys(cpu, 0.0)
    per_round = OPERATIONS // ROUNDS
    for _, operation in layers:
        await operation(first_id)  # warm-up: connections, prepared statements, caches
    for round_number in range(ROUNDS):
        first = first_id + 1 + round_number * per_round
        for name, operation in layers:
            started_cpu, started = time.process_time(), time.perf_counter()
            for order_id in range(first, first + per_round):
                await operation(order_id)
            cpu[name] += time.process_time() - started_cpu
            wall[name] += time.perf_counter() - started
    calls = per_round * ROUNDS
    return [(name, cpu[name] / calls * 1000, wall[name] / calls * 1000) for name in cpu]


def _fast_engine(url: str) -> AsyncEngine:
    """No pre-ping, AUTOCOMMIT: one round trip per single-statement unit of work."""
    engine = create_async_engine(url, pool_size=5, pool_pre_ping=False)
    return engine.execution_options(isolation_level="AUTOCOMMIT")


async def database_layers(bench: Bench) -> Timings:
    product = create_engine(bench.database_url)
    pinged = create_async_engine(bench.database_url, pool_size=5, pool_pre_ping=True)
    fast = _fast_engine(bench.database_url)
    try:
        async with fast.connect() as connection:
            raw = (await connection.get_raw_connection()).driver_connection
            assert raw is not None
            layers = [
                *_session_layers(product, pinged, fast),
                ("SQLAlchemy Core connection, AUTOCOMMIT, one-order upsert", _core_layer(fast)),
                (
                    "asyncpg alone, one-order upsert",
                    lambda n: raw.fetchrow(UPSERT_ONE_TOTAL_DRIVER_SQL, n),
                ),
                (
                    "asyncpg alone, `SELECT 1`: one bare round trip",
                    lambda _: raw.fetchrow("SELECT 1"),
                ),
            ]
            found = await _interleaved(layers, bench.first_id)
    finally:
        for engine in (product, pinged, fast):
            await engine.dispose()
        await truncate_totals(bench.engine)
    return found


def _session_layers(
    product: AsyncEngine, pinged: AsyncEngine, fast: AsyncEngine
) -> list[tuple[str, Operation]]:
    """The AsyncSession paths: the product's, and the same statement with more machinery."""

    def in_session(engine: AsyncEngine, begin: bool, direct: bool) -> Operation:
        sessions = create_sessionmaker(engine)
        upsert = totals.upsert_order_total_direct if direct else totals.upsert_order_total

        async def operation(order_id: int) -> None:
            async with sessions.begin() if begin else sessions() as session:
                await upsert(session, order_id)

        return operation

    return [
        (
            "product: AsyncSession on AUTOCOMMIT, statement sent on its asyncpg connection",
            in_session(fast, begin=False, direct=True),
        ),
        (
            "AsyncSession on AUTOCOMMIT, statement through SQLAlchemy",
            in_session(fast, begin=False, direct=False),
        ),
        (
            "AsyncSession in a transaction (BEGIN/COMMIT), through SQLAlchemy",
            in_session(product, begin=True, direct=False),
        ),
        ("the same with `pool_pre_ping=True`", in_session(pinged, begin=True, direct=False)),
    ]


def _core_layer(fast: AsyncEngine) -> Operation:
    async def core(order_id: int) -> None:
        async with fast.connect() as connection:
            (await connection.execute(UPSERT_ONE_TOTAL, {"order_id": order_id})).one_or_none()

    return core


async def wrapper_layers() -> Timings:
    """jobs/runner.py around a body that does nothing, logging JSON to /dev/null."""

    async def body(ctx: Any, payload: ComputeOrderTotalPayload) -> OrderTotalResult:
        return OrderTotalResult(order_id=payload.order_id, total=Decimal("30.00"))

    entry = job_entry("compute_order_total", ComputeOrderTotalPayload, body)
    policy = JobPolicy(20.0, 5, 0.5, 30.0, 250)
    ctx = {"policy": policy, "job_id": "x", "job_try": 1, "enqueue_time": datetime.now(UTC)}
    root = logging.getLogger()
    handlers, level_before = list(root.handlers), root.level
    sink = await asyncio.to_thread(open, os.devnull, "w")  # a real write per line, as on stderr
    try:
        found = []
        for level in ("INFO", "WARNING"):  # one logging set-up at a time: no interleaving here
            configure_logging(level, "json", stream=sink)
            # A fresh proxy: the runner's cached logger would keep the first level's filtering.
            runner.log = structlog.get_logger("orderworker.jobs")
            name = f"job wrapper alone (validation, timeout, result), log level {level}"
            found += await _interleaved([(name, lambda n: entry(ctx, order_id=n))])
    finally:
        root.handlers[:], root.level = handlers, level_before
        structlog.reset_defaults()
        sink.close()
    return found


async def layers_markdown(bench: Bench) -> str:
    rows = await database_layers(bench) + await wrapper_layers()
    lines = [
        f"One single-order job's pieces, {OPERATIONS:,} calls each, one at a time, in one process:",
        "",
        "| layer | client CPU ms/call | wall ms/call |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {cpu:.3f} | {wall:.3f} |" for name, cpu, wall in rows]
    return "\n".join(lines)
