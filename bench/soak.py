"""Soak, a mode of the benchmark (`uv run python -m bench.run --soak [--jobs N] [--kills N]`, not
in CI, a few minutes): 100,000 `compute_order_total` jobs through two worker replicas on a private
local stack, with one replica killed (SIGKILL) and replaced a few times mid-run. Every job must end
with a success result and every stored total must be exact. Prints throughput, failures, and for
each kill how long the jobs in flight took to run again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from arq.constants import in_progress_key_prefix, result_key_prefix

from bench.stack import load_orders
from db.engine import create_engine
from jobs.client import JobRequest, OrderClient
from jobs.connection import redis_settings_from_url
from worker import health
from worker.harness.checks import TotalsCheck, check_totals
from worker.harness.databases import create_database
from worker.harness.polling import poll_until
from worker.harness.replicas import Replica, replica_env, stop_all
from worker.harness.servers import LocalStack
from worker.settings import WorkerTuning

REPO_ROOT = Path(__file__).resolve().parents[1]
QUEUE = "soak:queue"
READY_TIMEOUT_S = 60.0
DEADLINE_S = 900.0
SAMPLE_EVERY_S = 0.25
FRONT_OF_QUEUE = 500  # in-flight jobs sit at the front of the queue until they finish
RESULT_BATCH = 1000
KILL_WINDOW = 0.05  # after its step, a kill waits up to this share of the jobs for a busy replica
Results = dict[str, dict[str, object]]  # arq's stored results, by job id
# Default job timeout and lease: a killed replica's jobs run again once its lease lapses.
SOAK_SETTINGS = {"ORDERWORKER_WORKER__HEALTH_INTERVAL_S": "0.5"}
LEASE_S = WorkerTuning().lease_s


@dataclass
class Kill:
    at_done: int
    killed_at: float
    in_flight: list[str]  # every job in progress when the replica died (its own and the other's)
    killed_at_ms: int  # wall clock, to compare with the start times arq stores in results
    restart_s: float = 0.0
    recovery_s: float | None = None  # until each of them had a result


async def in_flight_beat(client: OrderClient, replica: Replica) -> int | None:
    """Jobs in flight by the replica's last heartbeat (a kill then orphans them); None: none yet."""
    beats = await health.live_replicas(client.redis, QUEUE)
    return next((int(b["in_flight"]) for b in beats if b["pid"] == replica.pid), None)


async def wait_ready(client: OrderClient, replica: Replica) -> float:
    """Seconds from launch until the replica's first heartbeat."""

    async def beating() -> bool:
        if not replica.alive():
            raise RuntimeError(f"replica exited at start; see {replica.log_path}")
        return await in_flight_beat(client, replica) is not None

    await poll_until(beating, "a replica's first heartbeat", READY_TIMEOUT_S, 0.1)
    return time.monotonic() - replica.started_at


async def jobs_in_flight(client: OrderClient) -> list[str]:
    front = [job_id.decode() for job_id in await client.redis.zrange(QUEUE, 0, FRONT_OF_QUEUE - 1)]
    async with client.redis.pipeline(transaction=False) as pipe:
        for job_id in front:
            pipe.exists(in_progress_key_prefix + job_id)
        flags = await pipe.execute()
    return [job_id for job_id, flag in zip(front, flags, strict=True) if flag]


async def results(client: OrderClient, job_ids: list[str]) -> Results:
    found: Results = {}
    for start in range(0, len(job_ids), RESULT_BATCH):
        batch = job_ids[start : start + RESULT_BATCH]
        stored = await client.redis.mget([result_key_prefix + job_id for job_id in batch])
        for job_id, data in zip(batch, stored, strict=True):
            if data is not None:
                found[job_id] = json.loads(data)
    return found


@dataclass
class Soak:
    jobs: int
    env: dict[str, str]
    root: Path  # the replicas' logs
    replicas: list[Replica] = field(default_factory=list)
    enqueue_s: float = 0.0
    elapsed_s: float = 0.0
    samples: list[tuple[float, int]] = field(default_factory=list)  # (time, jobs done)
    kills: list[Kill] = field(default_factory=list)

    def spawn(self, n: int) -> Replica:
        return Replica.spawn(self.env, self.root / f"replica-{n}.log", cwd=REPO_ROOT)

    def kill_all(self) -> None:
        for replica in self.replicas:
            replica.kill()


async def drive(client: OrderClient, soak: Soak, kills: int) -> None:
    """Enqueue every job, kill and replace a replica at even steps, wait for every result."""
    job_ids = [f"soak:{order_id}" for order_id in range(1, soak.jobs + 1)]
    started = time.monotonic()
    await client.enqueue_many(
        JobRequest("compute_order_total", {"order_id": order_id}, job_id=job_id)
        for order_id, job_id in enumerate(job_ids, start=1)
    )
    soak.enqueue_s = time.monotonic() - started
    thresholds = [soak.jobs * (n + 1) // (kills + 1) for n in range(kills)]
    while time.monotonic() < started + DEADLINE_S:
        done = soak.jobs - await client.redis.zcard(QUEUE)
        soak.samples.append((time.monotonic(), done))
        replicas, slot = soak.replicas, len(soak.kills) % len(soak.replicas)
        due = bool(thresholds) and done >= thresholds[0]
        overdue = due and done >= thresholds[0] + soak.jobs * KILL_WINDOW
        if due and (overdue or await in_flight_beat(client, replicas[slot])):
            thresholds.pop(0)
            replicas[slot].process.kill()
            killed_at = time.monotonic()
            in_flight = await jobs_in_flight(client)
            # Of these, only the killed replica's can start (again) after this instant.
            kill = Kill(done, killed_at, in_flight, int(time.time() * 1000))
            kill.recovery_s = None if in_flight else 0.0
            await asyncio.to_thread(replicas[slot].process.wait)
            replicas[slot] = soak.spawn(len(soak.kills) + 2)
            kill.restart_s = await wait_ready(client, replicas[slot])
            soak.kills.append(kill)
        for kill in [kill for kill in soak.kills if kill.recovery_s is None]:
            if len(await results(client, kill.in_flight)) == len(kill.in_flight):
                kill.recovery_s = time.monotonic() - kill.killed_at
        recovered = all(kill.recovery_s is not None for kill in soak.kills)
        if done == soak.jobs and not thresholds and recovered:
            break
        await asyncio.sleep(SAMPLE_EVERY_S)
    soak.elapsed_s = time.monotonic() - started


async def run_soak(jobs: int, kills: int, root: Path) -> bool:
    with LocalStack(root=root, name="soak") as urls:
        database_url = await create_database(urls.database_url, "soak")
        env = replica_env(
            database_url, urls.redis_url, QUEUE, inherit_settings=False, extra=SOAK_SETTINGS
        )
        soak = Soak(jobs, env, root)
        async with contextlib.AsyncExitStack() as cleanup:  # in reverse: replicas killed first
            client = await OrderClient.connect(redis_settings_from_url(urls.redis_url), QUEUE)
            cleanup.push_async_callback(client.close)
            engine = create_engine(database_url)
            cleanup.push_async_callback(engine.dispose)
            cleanup.callback(soak.kill_all)
            await load_orders(engine, jobs - 3)  # the 3 sample orders and generated ones
            soak.replicas += [soak.spawn(n) for n in range(2)]
            for replica in soak.replicas:
                await wait_ready(client, replica)
            await drive(client, soak, kills)
            outcome = await results(client, [f"soak:{n}" for n in range(1, jobs + 1)])
            check = await check_totals(engine)
            exit_codes = await asyncio.to_thread(stop_all, soak.replicas, 60)
            return verdict(soak, outcome, check, exit_codes)


def verdict(soak: Soak, outcome: Results, check: TotalsCheck, exit_codes: list[int]) -> bool:
    failed = report(soak, outcome, check)
    print(f"replica exit codes   {exit_codes} after SIGTERM")
    logs = "".join(path.read_text(errors="replace") for path in sorted(soak.root.glob("*.log")))
    retrying, errors = logs.count('"job.retrying"'), logs.count('"level": "error"')
    print(f"log lines            {retrying} job.retrying, {errors} at error level")
    return (
        len(outcome) == soak.jobs
        and failed == 0
        and check.ok
        and check.dead_letters == 0
        and all(kill.recovery_s is not None for kill in soak.kills)
        and exit_codes == [0] * len(exit_codes)
    )


def report(soak: Soak, outcome: Results, check: TotalsCheck) -> int:
    """Print the figures; returns the number of failed jobs."""
    failed = sum(1 for result in outcome.values() if not result.get("s"))
    tries = Counter(int(str(result.get("t"))) for result in outcome.values())
    rates = [
        (done_2 - done_1) / (time_2 - time_1)
        for (time_1, done_1), (time_2, done_2) in itertools.pairwise(soak.samples)
        if done_2 < soak.jobs and time_2 > time_1
    ]
    print(f"jobs                 {soak.jobs:,} compute_order_total, 2 replicas")
    print(f"enqueue (pipelined)  {soak.enqueue_s:.2f}s = {soak.jobs / soak.enqueue_s:,.0f} jobs/s")
    print(f"wall time            {soak.elapsed_s:.1f}s from first enqueue to last result")
    print(f"throughput           {soak.jobs / soak.elapsed_s:,.0f} jobs/s overall")
    if rates:
        print(
            f"rate per sample      median {statistics.median(rates):,.0f}, "
            f"min {min(rates):,.0f}, max {max(rates):,.0f} jobs/s ({SAMPLE_EVERY_S:g}s samples)"
        )
    seen: set[str] = set()  # a job orphaned by one kill may still be in flight at the next
    for n, kill in enumerate(soak.kills, start=1):
        own = [job_id for job_id in kill.in_flight if job_id not in seen]
        seen.update(own)
        # The killed replica's jobs: their successful run started after the kill.
        rerun = sum(1 for job_id in own if int(str(outcome[job_id]["st"])) > kill.killed_at_ms)
        recovery = "never" if kill.recovery_s is None else f"{kill.recovery_s:.1f}s"
        print(
            f"kill {n}               at {kill.at_done:,} done: {len(own)} in flight, "
            f"{rerun} of them the killed replica's (run again), all finished {recovery} after the "
            f"SIGKILL (lease {LEASE_S:g}s); replacement ready in {kill.restart_s:.1f}s"
        )
    print(f"results              {len(outcome):,} of {soak.jobs:,}; failed {failed}")
    print(f"tries                {dict(sorted(tries.items()))}")
    wrong, dead = check.wrong + check.absent, check.dead_letters
    print(f"order_totals         {check.stored:,} rows, {wrong} wrong; dead letters {dead}")
    return failed
