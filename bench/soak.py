"""Soak: 100,000 `compute_order_total` jobs through two worker replicas on a private local stack,
with one replica killed (SIGKILL) and restarted a few times mid-run. Every job must end with a
success result and every stored total must be exact. Not part of CI (a few minutes):

    uv run python -m bench.soak [--jobs 100000] [--kills 3]

Prints throughput, failures, and for each kill how long the jobs in flight took to run again.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from arq.constants import in_progress_key_prefix, result_key_prefix
from sqlalchemy import make_url, text

from db.engine import create_engine, create_sessionmaker
from db.migrate import upgrade_to_head
from db.seed import generate_orders, load_sample
from jobs.client import JobRequest, OrderClient
from jobs.connection import redis_settings_from_url
from jobs.functions import ARQ_TIMEOUT_MARGIN_S
from worker import health
from worker.localstack import LocalStack

REPO_ROOT = Path(__file__).resolve().parents[1]
QUEUE = "soak:queue"
JOB_TIMEOUT_S = 3.0  # a killed replica's jobs wait timeout + margin + 10 s (arq) to run again
READY_TIMEOUT_S = 60.0
DEADLINE_S = 900.0
SAMPLE_EVERY_S = 0.25
FRONT_OF_QUEUE = 500  # in-flight jobs sit at the front of the queue until they finish
RESULT_BATCH = 1000
KILL_WINDOW = 0.05  # after its step, a kill waits up to this share of the jobs for a busy replica

CHECK_TOTALS = text(
    """
    WITH expected AS (
        SELECT o.id AS order_id, COALESCE(SUM(i.price * oi.quantity), 0) AS total
        FROM orders o
        LEFT JOIN order_items oi ON oi.order_id = o.id
        LEFT JOIN item i ON i.id = oi.item_id
        GROUP BY o.id
    )
    SELECT
        (SELECT count(*) FROM order_totals) AS totals,
        (SELECT count(*) FROM expected e FULL JOIN order_totals t USING (order_id)
         WHERE t.total IS DISTINCT FROM e.total) AS mismatches,
        (SELECT count(*) FROM failed_jobs) AS dead_letters
    """
)


@dataclass
class Replica:
    process: subprocess.Popen[bytes]
    log_path: Path
    started_at: float = field(default_factory=time.monotonic)

    @classmethod
    def launch(cls, env: dict[str, str], log_path: Path) -> Replica:
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "worker", "worker"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
                cwd=REPO_ROOT,
            )
        return cls(process, log_path)


@dataclass
class Kill:
    at_done: int
    killed_at: float
    in_flight: list[str]  # every job in progress when the replica died (its own and the other's)
    killed_at_ms: int  # wall clock, to compare with the start times arq stores in results
    restart_s: float = 0.0
    recovery_s: float | None = None  # until each of them had a result


def worker_env(database_url: str, redis_url: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ORDERWORKER_")}
    env.update(
        ORDERWORKER_DATABASE_URL=database_url,
        ORDERWORKER_REDIS_URL=redis_url,
        ORDERWORKER_QUEUE_NAME=QUEUE,
        ORDERWORKER_WORKER__JOB_TIMEOUT_S=str(JOB_TIMEOUT_S),
        ORDERWORKER_WORKER__HEALTH_INTERVAL_S="0.5",
        ORDERWORKER_LOG__FORMAT="json",
    )
    return env


async def prepare_database(admin_url: str, orders: int) -> str:
    admin = create_engine(admin_url)
    try:
        async with admin.connect() as connection:
            autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
            await autocommit.execute(text("CREATE DATABASE soak"))
    finally:
        await admin.dispose()
    url = make_url(admin_url).set(database="soak").render_as_string(hide_password=False)
    engine = create_engine(url)
    try:
        await upgrade_to_head(engine)
        async with create_sessionmaker(engine).begin() as session:
            await load_sample(session)  # orders 1-3
            await generate_orders(session, orders - 3)
    finally:
        await engine.dispose()
    return url


async def wait_ready(client: OrderClient, replica: Replica) -> float:
    """Seconds from launch until the replica's first heartbeat."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if replica.process.poll() is not None:
            raise RuntimeError(f"replica exited at start; see {replica.log_path}")
        beats = await health.live_replicas(client.redis, QUEUE)
        if any(beat["pid"] == replica.process.pid for beat in beats):
            return time.monotonic() - replica.started_at
        await asyncio.sleep(0.1)
    raise TimeoutError(f"replica not ready after {READY_TIMEOUT_S:g}s")


async def busy(client: OrderClient, replica: Replica) -> bool:
    """Whether the replica's last heartbeat showed jobs in flight: a kill then orphans some."""
    beats = await health.live_replicas(client.redis, QUEUE)
    return any(b["pid"] == replica.process.pid and b["in_flight"] > 0 for b in beats)


async def jobs_in_flight(client: OrderClient) -> list[str]:
    front = [job_id.decode() for job_id in await client.redis.zrange(QUEUE, 0, FRONT_OF_QUEUE - 1)]
    async with client.redis.pipeline(transaction=False) as pipe:
        for job_id in front:
            pipe.exists(in_progress_key_prefix + job_id)
        flags = await pipe.execute()
    return [job_id for job_id, flag in zip(front, flags, strict=True) if flag]


async def results(client: OrderClient, job_ids: list[str]) -> dict[str, dict[str, object]]:
    found: dict[str, dict[str, object]] = {}
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
    enqueue_s: float = 0.0
    elapsed_s: float = 0.0
    samples: list[tuple[float, int]] = field(default_factory=list)  # (time, jobs done)
    kills: list[Kill] = field(default_factory=list)


async def drive(
    client: OrderClient,
    env: dict[str, str],
    root: Path,
    replicas: list[Replica],
    soak: Soak,
    kills: int,
) -> None:
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
        slot = len(soak.kills) % len(replicas)
        overdue = bool(thresholds) and done >= thresholds[0] + soak.jobs * KILL_WINDOW
        if thresholds and done >= thresholds[0] and (overdue or await busy(client, replicas[slot])):
            thresholds.pop(0)
            replicas[slot].process.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            in_flight = await jobs_in_flight(client)
            # Of these, only the killed replica's can start (again) after this instant.
            kill = Kill(done, killed_at, in_flight, int(time.time() * 1000))
            kill.recovery_s = None if in_flight else 0.0
            await asyncio.to_thread(replicas[slot].process.wait)
            replicas[slot] = Replica.launch(env, root / f"replica-{len(soak.kills) + 2}.log")
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
    stack = LocalStack(root=root, name="soak")
    urls = await asyncio.to_thread(stack.start)
    replicas: list[Replica] = []
    client: OrderClient | None = None
    try:
        database_url = await prepare_database(urls.database_url, jobs)
        env = worker_env(database_url, urls.redis_url)
        client = await OrderClient.connect(redis_settings_from_url(urls.redis_url), QUEUE)
        replicas = [Replica.launch(env, root / f"replica-{n}.log") for n in range(2)]
        for replica in replicas:
            await wait_ready(client, replica)
        soak = Soak(jobs)
        await drive(client, env, root, replicas, soak, kills)

        outcome = await results(client, [f"soak:{order_id}" for order_id in range(1, jobs + 1)])
        engine = create_engine(database_url)
        try:
            async with engine.connect() as connection:
                check = (await connection.execute(CHECK_TOTALS)).one()
        finally:
            await engine.dispose()
        exit_codes = []
        for replica in replicas:
            replica.process.send_signal(signal.SIGTERM)
            exit_codes.append(await asyncio.to_thread(replica.process.wait, 60))
        logs = await asyncio.to_thread(read_logs, root)

        failed = report(soak, outcome, check.totals, check.mismatches, check.dead_letters)
        print(f"replica exit codes   {exit_codes} after SIGTERM")
        retrying, errors = logs.count('"job.retrying"'), logs.count('"level": "error"')
        print(f"log lines            {retrying} job.retrying, {errors} at error level")
        return (
            len(outcome) == jobs
            and failed == 0
            and (check.totals, check.mismatches, check.dead_letters) == (jobs, 0, 0)
            and all(kill.recovery_s is not None for kill in soak.kills)
            and exit_codes == [0] * len(replicas)
        )
    finally:
        for replica in replicas:
            if replica.process.poll() is None:
                replica.process.kill()
                replica.process.wait()
        if client is not None:
            await client.close()
        await asyncio.to_thread(stack.stop)


def read_logs(root: Path) -> str:
    return "".join(path.read_text(errors="replace") for path in sorted(root.glob("*.log")))


def report(
    soak: Soak, outcome: dict[str, dict[str, object]], totals: int, wrong: int, dead: int
) -> int:
    """Print the figures; returns the number of failed jobs."""
    failed = sum(1 for result in outcome.values() if not result.get("s"))
    tries = Counter(int(str(result.get("t"))) for result in outcome.values())
    rates = [
        (done_2 - done_1) / (time_2 - time_1)
        for (time_1, done_1), (time_2, done_2) in itertools.pairwise(soak.samples)
        if done_2 < soak.jobs and time_2 > time_1
    ]
    expiry_s = JOB_TIMEOUT_S + ARQ_TIMEOUT_MARGIN_S + 10
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
            f"{rerun} of them the killed replica's (run again), all finished {recovery} after "
            f"the SIGKILL "
            f"(in-progress expiry {expiry_s:g}s); replacement ready in {kill.restart_s:.1f}s"
        )
    print(f"results              {len(outcome):,} of {soak.jobs:,}; failed {failed}")
    print(f"tries                {dict(sorted(tries.items()))}")
    print(f"order_totals         {totals:,} rows, {wrong} wrong; dead letters {dead}")
    return failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--kills", type=int, default=3)
    options = parser.parse_args()
    if options.jobs < 3:
        parser.error("--jobs must be at least 3")
    root = Path(tempfile.mkdtemp(prefix="orderworker-soak-"))
    try:
        passed = asyncio.run(run_soak(options.jobs, options.kills, root))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print("PASS" if passed else "FAIL")
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
