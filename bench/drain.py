"""Single jobs drained by ONE worker process (orderworker's, or the bare arq worker). The jobs are
all queued before the worker is spawned; the clock runs from its spawn until the last result exists
(start-up included, nothing subtracted)."""

from __future__ import annotations

import asyncio
import contextlib
import time

from redis.asyncio import Redis

from bench.measure import Outcome
from bench.noop_worker import NOOP_FUNCTION
from bench.processes import Child, cpu_seconds
from bench.stack import RUN_TIMEOUT_S, Bench, clear_queue_keys, truncate_totals
from jobs.client import JobRequest, OrderClient
from jobs.connection import redis_settings_from_url
from worker.harness.checks import check_totals
from worker.harness.polling import poll_until
from worker.harness.replicas import scrape

RESULT_POLL_S = 0.05
SCRAPE_EVERY_S = 1.0  # with metrics on: /metrics read as often as the queue gauges change


class Scraper:
    """Reads the worker's /metrics at most every SCRAPE_EVERY_S; without a port, never."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._last = 0.0

    def worker_args(self) -> list[str]:
        return ["--metrics-port", str(self.port)] if self.port else []

    async def maybe(self) -> None:
        if self.port and time.perf_counter() - self._last >= SCRAPE_EVERY_S:
            await asyncio.to_thread(self._read)
            self._last = time.perf_counter()

    def _read(self) -> None:
        with contextlib.suppress(OSError):
            scrape(self.port)


async def redis_commands(redis: Redis) -> int:
    stats = await redis.info("stats")
    return int(stats["total_commands_processed"])


async def enqueue_single_jobs(bench: Bench, queue: str, function: str, jobs: int) -> list[str]:
    """One job per order for the first `jobs` orders, pipelined, as a producer would."""
    requests = [
        JobRequest(function, {"order_id": order_id}, f"{queue}:{order_id}")
        for order_id in range(bench.first_id, bench.first_id + jobs)
    ]
    client = await OrderClient.connect(redis_settings_from_url(bench.redis_url), queue)
    try:
        await client.enqueue_many(requests)
    finally:
        await client.close()
    return [request.job_id for request in requests]


async def single_jobs(
    bench: Bench,
    label: str,
    jobs: int,
    function: str,
    worker_args: list[str],
    metrics_port: int = 0,
) -> Outcome:
    """With `metrics_port`, the worker serves /metrics there and is scraped every second."""
    scraper = Scraper(metrics_port)
    queue = bench.queue(label)
    await truncate_totals(bench.engine)
    job_ids = await enqueue_single_jobs(bench, queue, function, jobs)
    keys = ["arq:result:" + job_id for job_id in job_ids]
    commands_before = await redis_commands(bench.redis)
    child = Child([*worker_args, *scraper.worker_args()], bench.env(queue), bench.log_dir, label)
    polls, first_result, startup_cpu = 0, 0.0, 0.0

    async def all_results() -> bool:
        nonlocal polls, first_result, startup_cpu
        await scraper.maybe()
        done = int(await bench.redis.exists(*keys))
        polls += 1
        if done and not first_result:
            first_result, startup_cpu = time.perf_counter(), cpu_seconds(child.process.pid)
        child.check_alive()
        return done == len(keys)

    try:
        await poll_until(all_results, f"{label}: {jobs} results", RUN_TIMEOUT_S, RESULT_POLL_S)
        last_result = time.perf_counter()
        # Our own polls (one EXISTS each) and this INFO are not the worker's.
        commands = await redis_commands(bench.redis) - commands_before - polls - 1
    finally:
        stopped = await child.stop()
    verification = None
    if function != NOOP_FUNCTION:
        verification = await check_totals(bench.engine, bench.first_id, bench.first_id + jobs - 1)
    await clear_queue_keys(bench.redis, queue, job_ids)
    return Outcome(
        count=jobs,
        seconds=last_result - child.started,
        verification=verification,
        worker_rss_mib=[stopped.peak_rss_mib],
        worker_cpu_s=[stopped.cpu_seconds],
        steady_seconds=last_result - first_result,
        startup_cpu_s=startup_cpu,
        redis_commands=commands,
        note=f"first result after {first_result - child.started:.2f}s (startup)",
    )
