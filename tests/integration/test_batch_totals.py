"""One batch shared by two real worker processes: every total exact, written once, work shared."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.seed import generate_orders
from jobs.batches import BatchRun, chunked
from jobs.client import OrderClient
from tests.conftest import poll_until
from tests.integration.test_queries import expected_totals, totals_rows
from worker.health import live_replicas

Sessions = async_sessionmaker[AsyncSession]
StartProcess = Callable[..., subprocess.Popen[str]]
GENERATED_ORDERS = 3000
CHUNK_SIZE = 50


def log_events(stderr: str) -> list[dict[str, Any]]:
    events = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    return events


async def stop(process: subprocess.Popen[str]) -> str:
    """SIGTERM, then the process's stderr once it has exited."""
    process.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.to_thread(process.communicate, timeout=30)
    return stderr


async def test_two_worker_processes_share_a_batch_and_every_total_is_exact(
    seeded: None,
    sessionmaker: Sessions,
    worker_processes: StartProcess,
    client: OrderClient,
    redis: Redis,
    queue_name: str,
) -> None:
    # Started first: the processes boot while the orders are generated.
    processes = [worker_processes("--concurrency", "4") for _ in range(2)]
    async with sessionmaker.begin() as session:
        await generate_orders(session, GENERATED_ORDERS)
    expected = await expected_totals(sessionmaker)
    order_ids = sorted(expected)
    assert len(order_ids) == GENERATED_ORDERS + 3
    assert Decimal("0.00") in expected.values()  # empty orders are part of the batch

    async def both_replicas_live() -> bool:
        return len(await live_replicas(redis, queue_name)) == 2

    await poll_until(both_replicas_live, "two live worker replicas", timeout_s=60)

    # A fresh batch id: chunk job ids (and their results) are global in Redis, not per queue.
    run = BatchRun(client, batch_id=f"two-replicas-{uuid.uuid4().hex}")
    await run.submit_chunks(chunked(order_ids, CHUNK_SIZE))
    await run.wait(timeout_s=60)
    summary = run.summary

    assert summary.failed == []
    assert summary.jobs == -(-len(order_ids) // CHUNK_SIZE)
    assert summary.requested == summary.computed == len(order_ids)
    assert summary.missing == []
    assert summary.total_sum == sum(expected.values())
    stored = await totals_rows(sessionmaker)
    assert len(stored) == len(order_ids)  # one row per order
    assert dict(stored) == expected  # each equals its independently computed Decimal sum

    await assert_heartbeats_share(redis, queue_name, summary.jobs)
    await assert_clean_stops_share(processes, summary.jobs)
    assert await live_replicas(redis, queue_name) == []  # both said goodbye


async def assert_heartbeats_share(redis: Redis, queue_name: str, jobs: int) -> None:
    """Both replicas' heartbeats count the `jobs` chunks between them, each some, none failed."""
    beats: list[dict[str, Any]] = []

    async def heartbeats_caught_up() -> bool:
        nonlocal beats
        beats = await live_replicas(redis, queue_name)
        return len(beats) == 2 and sum(int(beat["jobs_done"]) for beat in beats) == jobs

    await poll_until(heartbeats_caught_up, "both heartbeats counting every chunk")
    assert all(beat["jobs_done"] > 0 for beat in beats), beats
    assert all(beat["jobs_failed"] == beat["jobs_retried"] == 0 for beat in beats), beats


async def assert_clean_stops_share(processes: list[subprocess.Popen[str]], jobs: int) -> None:
    """Each process stops cleanly on SIGTERM, having logged some of the `jobs` chunks, and
    together exactly all of them."""
    done_per_process = []
    for process in processes:
        stderr = await stop(process)
        assert process.returncode == 0, stderr
        assert "Traceback" not in stderr
        events = log_events(stderr)
        troubles = [e for e in events if e["level"] in {"error", "critical"} or "exception" in e]
        assert troubles == []
        assert any(event["event"] == "worker.stopped" for event in events)
        done_per_process.append(sum(event["event"] == "job.done" for event in events))
    assert all(count > 0 for count in done_per_process), done_per_process
    assert sum(done_per_process) == jobs  # every chunk ran exactly once
