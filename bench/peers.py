"""orderworker side by side with SAQ (`uv run python -m bench.run --peers`): the same per-order
job on both (the product's statement through an AsyncSession from the product's engine factory),
one worker at concurrency 20 each, the same servers, 3 interleaved rounds.

Per round and system: a drain (10,000 jobs queued first, then the worker spawned; the rate from its
first result to its last) and the latency at 100 jobs/s open loop for 10 s, each job timed from its
enqueue call to its waiter returning, through each system's own client:
`OrderClient.enqueue_and_wait` (done notice), and SAQ's `queue.enqueue` then
`job.refresh(until_complete)` (SAQ's pub/sub listener; kept subscribed for the phase, as in a
long-running service).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from redis.asyncio import Redis
from saq.job import TERMINAL_STATUSES, Job, Status
from saq.queue.redis import RedisQueue

from bench import drain
from bench.measure import Outcome
from bench.processes import Child, cpu_seconds
from bench.saq_worker import SAQ_FUNCTION, saq_queue
from bench.stack import RUN_TIMEOUT_S, Bench, clear_queue_keys, say, truncate_totals
from jobs.client import OrderClient
from jobs.connection import redis_settings_from_url
from worker.harness.checks import check_totals
from worker.harness.polling import poll_until

ROUNDS, DRAIN_JOBS, RATE, SEND_S = 3, 10_000, 100, 10.0
WARMUP_JOBS = 20  # sequential jobs before the clock: pools open, statements prepared
FALLBACK_S = 0.5  # a SAQ waiter's bounded wait per try, as OrderClient.wait's fallback read
SYSTEMS = ("orderworker", "SAQ")


@dataclass(slots=True)
class Figures:
    drain_rates: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)  # the worker's CPU per job, after start-up
    loads: list[float] = field(default_factory=list)  # 1-min load average after each round
    latencies: list[dict[int, float]] = field(default_factory=list)  # per round: p50, p90, p99

    def median_rate(self) -> float:
        return statistics.median(self.drain_rates)

    def median_ms(self, percentile: int) -> float:
        return statistics.median(round_[percentile] for round_ in self.latencies)


def percentiles_ms(latencies_ms: list[float]) -> dict[int, float]:
    cuts = statistics.quantiles(latencies_ms, n=100, method="inclusive")
    return {50: cuts[49], 90: cuts[89], 99: cuts[98]}


async def open_loop(job: Callable[[int], Awaitable[None]]) -> list[float]:
    """Job n starts at start + n / RATE whatever earlier ones do; each one's ms to its result."""

    async def timed(n: int) -> float:
        started = time.perf_counter()
        await job(n)
        return (time.perf_counter() - started) * 1000

    for n in range(WARMUP_JOBS):
        await job(n)
    tasks, started = [], time.monotonic()
    for n in range(round(RATE * SEND_S)):
        await asyncio.sleep(max(0.0, started + n / RATE - time.monotonic()))
        tasks.append(asyncio.create_task(timed(n)))
    return list(await asyncio.gather(*tasks))


async def orderworker_latency(bench: Bench, label: str) -> list[float]:
    queue = bench.queue(label)
    replicas = await bench.start_replicas(label, queue, 1)
    client = await OrderClient.connect(redis_settings_from_url(bench.redis_url), queue)
    job_ids: list[str] = []

    async def job(n: int) -> None:
        job_ids.append(uuid.uuid4().hex)
        order_id = bench.first_id + n % bench.orders
        function = "compute_order_total"
        outcome = await client.enqueue_and_wait(
            function, RUN_TIMEOUT_S, job_ids[-1], order_id=order_id
        )
        if not outcome.success:
            raise RuntimeError(f"{label}: job {job_ids[-1]} failed")

    try:
        return await open_loop(job)
    finally:
        await client.close()
        await asyncio.gather(*(replica.stop() for replica in replicas))
        await clear_queue_keys(bench.redis, queue, job_ids)


async def saq_finished(job: Job) -> None:
    """SAQ's own wait: its pub/sub listener, re-reading the job after each bounded wait."""
    while job.status not in TERMINAL_STATUSES:
        with contextlib.suppress(TimeoutError):
            await job.refresh(until_complete=FALLBACK_S)
    if job.status != Status.COMPLETE:
        raise RuntimeError(f"SAQ job {job.key}: {job.status} {job.error}")


async def saq_latency(bench: Bench, label: str) -> list[float]:
    queue = saq_queue(bench.redis_url, bench.queue(label))
    await queue.connect()
    worker = Child(["bench.saq_worker"], bench.env(queue.name), bench.log_dir, label)
    # A listener for no job: keeps SAQ's one psubscribe up between waiters, as in a busy service.
    keep = asyncio.create_task(queue.listen(["-"], lambda key, status: False, timeout=None))

    async def job(n: int) -> None:
        enqueued = await queue.enqueue(SAQ_FUNCTION, order_id=bench.first_id + n % bench.orders)
        assert enqueued is not None  # a fresh key each time
        await saq_finished(enqueued)

    try:
        return await open_loop(job)
    finally:
        keep.cancel()
        await worker.stop()
        await clear_saq_keys(bench, queue)
        await queue.disconnect()


async def saq_drain(bench: Bench, label: str) -> Outcome:
    """As `drain.single_jobs`: the jobs queued, then one SAQ worker spawned, until none is left."""
    queue = saq_queue(bench.redis_url, bench.queue(label))
    await truncate_totals(bench.engine)
    await queue.connect()
    ids = range(bench.first_id, bench.first_id + DRAIN_JOBS)
    for start in range(0, DRAIN_JOBS, 500):  # SAQ's enqueue is one script call per job
        await asyncio.gather(*(queue.enqueue(SAQ_FUNCTION, order_id=i) for i in ids[start:][:500]))
    incomplete = queue.namespace("incomplete")  # queued or running jobs; finished ones leave it
    commands_before = await drain.redis_commands(bench.redis)
    worker = Child(["bench.saq_worker"], bench.env(queue.name), bench.log_dir, label)
    first_result, polls, startup_cpu = 0.0, 0, 0.0

    async def all_done() -> bool:
        nonlocal first_result, polls, startup_cpu
        left, polls = int(await bench.redis.zcard(incomplete)), polls + 1
        if left < DRAIN_JOBS and not first_result:
            first_result, startup_cpu = time.perf_counter(), cpu_seconds(worker.process.pid)
        worker.check_alive()
        return left == 0

    try:
        what = f"{label}: {DRAIN_JOBS} jobs"
        await poll_until(all_done, what, RUN_TIMEOUT_S, drain.RESULT_POLL_S)
        last_result = time.perf_counter()
        commands = await drain.redis_commands(bench.redis) - commands_before - polls - 1
    finally:
        stopped = await worker.stop()
        await clear_saq_keys(bench, queue)
        await queue.disconnect()
    check = await check_totals(bench.engine, ids[0], ids[-1])
    return Outcome(
        DRAIN_JOBS,
        last_result - worker.started,
        verification=check,
        worker_cpu_s=[stopped.cpu_seconds],
        steady_seconds=last_result - first_result,
        startup_cpu_s=startup_cpu,
        redis_commands=commands,
    )


async def command_calls(redis: Redis) -> Counter[str]:
    """Calls so far of each Redis command (INFO commandstats)."""
    stats = await redis.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()})


async def clear_saq_keys(bench: Bench, queue: RedisQueue) -> None:
    """Every key of this SAQ queue (its lists, sets and jobs), never a whole Redis db."""
    keys = [key async for key in bench.redis.scan_iter(match=f"saq:*{queue.name}*", count=1000)]
    for start in range(0, len(keys), 1000):
        await bench.redis.delete(*keys[start : start + 1000])


async def measure_round(bench: Bench, number: int, figures: dict[str, Figures]) -> None:
    order = SYSTEMS if number % 2 else SYSTEMS[::-1]  # who goes first alternates
    for system in order:
        label = f"peers-{system.lower()}-r{number}"
        if system == "SAQ":
            outcome = await saq_drain(bench, f"{label}-drain")
        else:
            worker = ["worker", "worker"]
            outcome = await drain.single_jobs(
                bench, f"{label}-drain", DRAIN_JOBS, "compute_order_total", worker
            )
        if not outcome.ok:
            raise RuntimeError(f"{label}: drain check failed: {outcome.verification}")
        assert outcome.steady_seconds
        figures[system].drain_rates.append(outcome.count / outcome.steady_seconds)
        figures[system].cpu_ms.append(
            (outcome.worker_cpu_s[0] - outcome.startup_cpu_s) / outcome.count * 1000
        )
        waits = saq_latency if system == "SAQ" else orderworker_latency
        before = await command_calls(bench.redis)
        figures[system].latencies.append(percentiles_ms(await waits(bench, f"{label}-lat")))
        calls, sent = await command_calls(bench.redis) - before, WARMUP_JOBS + RATE * SEND_S
        per_job = ", ".join(f"{name} {n / sent:.1f}" for name, n in calls.most_common(12))
        found = figures[system].latencies[-1]
        figures[system].loads.append(os.getloadavg()[0])
        say(
            f"- round {number}, {system}: drain {figures[system].drain_rates[-1]:,.0f} jobs/s "
            f"({(outcome.redis_commands or 0) / outcome.count:.1f} Redis commands/job, "
            f"worker CPU {figures[system].cpu_ms[-1]:.2f} ms/job), "
            + " / ".join(f"p{p} {ms:.1f}" for p, ms in found.items())
            + f" ms (Redis commands/job, both sides: {calls.total() / sent:.1f}; {per_job}); "
            f"load {figures[system].loads[-1]:.1f}"
        )


async def run_peers(bench: Bench) -> str:
    """Every round; the Markdown section (medians of the rounds, then each round's figures)."""
    load_before = os.getloadavg()[0]
    figures = {system: Figures() for system in SYSTEMS}
    for number in range(1, ROUNDS + 1):
        await measure_round(bench, number, figures)
    return peers_section(figures, load_before, os.getloadavg()[0])


def peers_section(figures: dict[str, Figures], load_before: float, load_after: float) -> str:
    ours, saq = figures["orderworker"], figures["SAQ"]
    lines = [
        f"| system | drain rate, {DRAIN_JOBS:,} queued jobs | worker CPU per job "
        "| p50 / p90 / p99, enqueue to result |",
        "|---|---|---|---|",
    ]
    for system, found in figures.items():
        cuts = " / ".join(f"{found.median_ms(p):.1f}" for p in (50, 90, 99))
        cpu = statistics.median(found.cpu_ms)
        lines.append(f"| {system} | {found.median_rate():,.0f} jobs/s | {cpu:.2f} ms | {cuts} ms |")
    ratios = " / ".join(f"{ours.median_ms(p) / saq.median_ms(p):.2f}x" for p in (50, 90, 99))
    lines.append(
        f"| orderworker / SAQ | {ours.median_rate() / saq.median_rate():.2f}x "
        f"| {statistics.median(ours.cpu_ms) / statistics.median(saq.cpu_ms):.2f}x | {ratios} |"
    )
    lines += ["", f"Load average (1 min) before: {load_before:.1f}, after: {load_after:.1f}.", ""]
    for system, found in figures.items():
        rounds = "; ".join(
            f"{rate:,.0f} jobs/s, {cpu:.2f} ms CPU, "
            + " / ".join(f"{cut[p]:.1f}" for p in (50, 90, 99))
            + f" ms (load {load:.1f})"
            for rate, cpu, cut, load in zip(
                found.drain_rates, found.cpu_ms, found.latencies, found.loads, strict=True
            )
        )
        lines.append(f"- {system}, each round: {rounds}")
    return "\n".join(lines)
