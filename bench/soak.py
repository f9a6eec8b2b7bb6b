"""Soak, a mode of the benchmark (`uv run python -m bench.run --soak`, flags in bench/README.md;
not in CI): 100,000 jobs, one in five a `place_order` without an idempotency key, the rest
`compute_order_total`, through two replicas on a private local stack; a replica killed (SIGKILL,
then replaced) or frozen (SIGSTOP, SIGCONT later) in turn mid-run. Every job must succeed and
every `place_order` job make exactly one order (the one its result names); every total is checked,
no dead letter may be written. Prints throughput, and how long each fault's jobs took to finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from arq.constants import in_progress_key_prefix, result_key_prefix
from arq.utils import timestamp_ms

from bench.drain import redis_commands
from bench.stack import load_orders
from db.engine import create_engine
from jobs.client import JobRequest, OrderClient
from jobs.connection import redis_settings_from_url
from worker.harness.checks import OrdersCheck, TotalsCheck, check_orders, check_totals
from worker.harness.databases import create_database
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
ORDER_EVERY = 5  # every fifth job places an order, with no idempotency key: only its job id guards
Results = dict[str, dict[str, object]]  # arq's stored results, by job id
# Default job timeout and lease: a killed replica's jobs run again once its lease lapses.
SOAK_SETTINGS = {"ORDERWORKER_WORKER__HEALTH_INTERVAL_S": "0.5"}
LEASE_S = WorkerTuning().lease_s


@dataclass
class Fault:
    kind: str  # "SIGKILL" (the replica is replaced) or "SIGSTOP" (SIGCONT after the freeze)
    at_done: int
    struck_at: float
    in_flight: list[str]  # every job in progress when the fault struck (the victim's and others')
    struck_at_ms: int  # wall clock, to compare with the start times arq stores in results
    restart_s: float = 0.0
    recovery_s: float | None = None  # until each of them had a result


def soak_jobs(jobs: int) -> list[JobRequest]:
    """One `compute_order_total` per loaded order, with a `place_order` every ORDER_EVERY jobs."""
    requests, order_id = [], 0
    for n in range(1, jobs + 1):
        if n % ORDER_EVERY == 0:
            items = [{"item_id": 1 + n % 4, "quantity": 1 + n % 7}]
            kwargs = {"customer_id": 1 + n % 3, "items": items, "idempotency_key": None}
            requests.append(JobRequest("place_order", kwargs, f"soak:order:{n}"))
        else:
            order_id += 1
            requests.append(JobRequest("compute_order_total", {"order_id": order_id}, f"soak:{n}"))
    return requests


def order_reported(result: dict[str, object] | None) -> object:
    """The order id a `place_order` result names; None without a successful result."""
    value = result.get("r") if result else None
    return value.get("order_id") if isinstance(value, dict) else None


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
    freeze_s: float
    replicas: list[Replica] = field(default_factory=list)
    enqueue_s: float = 0.0
    elapsed_s: float = 0.0
    samples: list[tuple[float, int]] = field(default_factory=list)  # (time, jobs done)
    faults: list[Fault] = field(default_factory=list)
    under_way: list[asyncio.Task[None]] = field(default_factory=list)  # SIGCONTs, replacements
    redis_commands: int = 0  # processed by Redis from the last enqueue to the last result

    def spawn(self, n: int) -> Replica:
        return Replica.spawn(self.env, self.root / f"replica-{n}.log", cwd=REPO_ROOT)

    def kill_all(self) -> None:
        for replica in self.replicas:
            replica.kill()

    def busy(self) -> bool:
        """A freeze or a replacement's start is under way: the next fault waits for its end."""
        return any(not task.done() for task in self.under_way)


def fault_plan(kills: int, freezes: int) -> list[str]:
    """SIGKILL and SIGSTOP in turn, beginning with a kill, the rest of the longer kind last."""
    pairs = itertools.zip_longest(["SIGKILL"] * kills, ["SIGSTOP"] * freezes)
    return [kind for pair in pairs for kind in pair if kind]


async def strike(client: OrderClient, soak: Soak, kind: str, slot: int, done: int) -> Fault:
    """A kill (the replica replaced once it is gone) or a freeze (SIGCONT after `freeze_s`)."""
    victim = soak.replicas[slot]
    victim.process.send_signal(signal.SIGKILL if kind == "SIGKILL" else signal.SIGSTOP)
    fault = Fault(kind, done, time.monotonic(), await jobs_in_flight(client), timestamp_ms())
    # Of these, only the victim's can start (again) after this instant.
    fault.recovery_s = None if fault.in_flight else 0.0
    if kind == "SIGSTOP":
        soak.under_way.append(asyncio.create_task(thaw(victim, soak.freeze_s)))
    else:
        await asyncio.to_thread(victim.process.wait)
        replacement = soak.replicas[slot] = soak.spawn(len(soak.faults) + 2)
        # Not awaited here: the jobs' recovery is timed while the replacement starts.
        soak.under_way.append(asyncio.create_task(replaced(client, fault, replacement)))
    return fault


async def thaw(victim: Replica, freeze_s: float) -> None:
    await asyncio.sleep(freeze_s)  # the freeze's length: the fault itself, not a wait for news
    victim.process.send_signal(signal.SIGCONT)


async def replaced(client: OrderClient, fault: Fault, replacement: Replica) -> None:
    fault.restart_s = await replacement.ready(client.redis, QUEUE, READY_TIMEOUT_S)


async def drive(
    client: OrderClient, soak: Soak, requests: list[JobRequest], plan: list[str]
) -> None:
    """Enqueue every job, strike a fault of the plan at each even step, wait for every result."""
    started = time.monotonic()
    await client.enqueue_many(requests)
    soak.enqueue_s = time.monotonic() - started
    commands = await redis_commands(client.redis)
    thresholds = [soak.jobs * (n + 1) // (len(plan) + 1) for n in range(len(plan))]
    while time.monotonic() < started + DEADLINE_S:
        done = soak.jobs - await client.redis.zcard(QUEUE)
        soak.samples.append((time.monotonic(), done))
        # Kill, freeze the other replica, then kill it: a replica woken from a freeze takes no
        # jobs over for two leases (leases.py), so the survivor of a kill is never just woken.
        slot = (len(soak.faults) + 1) // 2 % len(soak.replicas)
        due = bool(thresholds) and done >= thresholds[0] and not soak.busy()
        overdue = due and done >= thresholds[0] + soak.jobs * KILL_WINDOW
        if due and (overdue or await soak.replicas[slot].in_flight(client.redis, QUEUE)):
            thresholds.pop(0)
            soak.faults.append(await strike(client, soak, plan[len(soak.faults)], slot, done))
        for fault in [fault for fault in soak.faults if fault.recovery_s is None]:
            if len(await results(client, fault.in_flight)) == len(fault.in_flight):
                fault.recovery_s = time.monotonic() - fault.struck_at
        recovered = all(fault.recovery_s is not None for fault in soak.faults)
        if done == soak.jobs and not thresholds and recovered and not soak.busy():
            break
        await asyncio.sleep(SAMPLE_EVERY_S)
    soak.elapsed_s = time.monotonic() - started
    # The soak's own reads (a few a sample) are in it too: well under 0.1% of the replicas'.
    soak.redis_commands = await redis_commands(client.redis) - commands


async def run_soak(jobs: int, plan: list[str], freeze_s: float, root: Path) -> bool:
    with LocalStack(root=root, name="soak") as urls:
        database_url = await create_database(urls.database_url, "soak")
        env = replica_env(
            database_url, urls.redis_url, QUEUE, inherit_settings=False, extra=SOAK_SETTINGS
        )
        soak = Soak(jobs, env, root, freeze_s)
        async with contextlib.AsyncExitStack() as cleanup:  # in reverse: replicas killed first
            client = await OrderClient.connect(redis_settings_from_url(urls.redis_url), QUEUE)
            cleanup.push_async_callback(client.close)
            engine = create_engine(database_url)
            cleanup.push_async_callback(engine.dispose)
            cleanup.callback(soak.kill_all)
            requests = soak_jobs(jobs)
            orders = [r.job_id for r in requests if r.function == "place_order"]
            await load_orders(engine, jobs - len(orders) - 3)  # 3 sample orders, generated ones
            soak.replicas += [soak.spawn(n) for n in range(2)]
            for replica in soak.replicas:
                await replica.ready(client.redis, QUEUE, READY_TIMEOUT_S)
            await drive(client, soak, requests, plan)
            await asyncio.gather(*soak.under_way)  # a run cut short may end mid-freeze
            outcome = await results(client, [request.job_id for request in requests])
            check = await check_totals(engine)
            reported = {job_id: order_reported(outcome.get(job_id)) for job_id in orders}
            placed = await check_orders(engine, reported)
            exit_codes = await asyncio.to_thread(stop_all, soak.replicas, 60)
            return verdict(soak, outcome, check, placed, exit_codes)


def verdict(
    soak: Soak, outcome: Results, check: TotalsCheck, placed: OrdersCheck, exit_codes: list[int]
) -> bool:
    failed = report(soak, outcome, check, placed)
    print(f"replica exit codes   {exit_codes} after SIGTERM")
    print(f"load average         {os.getloadavg()[0]:.1f} (1 min, at the end; a shared machine)")
    logs = "".join(path.read_text(errors="replace") for path in sorted(soak.root.glob("*.log")))
    events = ("job.reclaimed", "job.lease_lost", "job.retrying")
    counts = ", ".join(f"{logs.count(json.dumps(event))} {event}" for event in events)
    errors = logs.count('"level": "error"')
    print(f"log lines            {counts}, {errors} at error level")
    return (
        len(outcome) == soak.jobs
        and failed == 0
        and check.ok
        and check.dead_letters == 0
        and placed.ok
        and all(fault.recovery_s is not None for fault in soak.faults)
        and exit_codes == [0] * len(exit_codes)
    )


def report(soak: Soak, outcome: Results, check: TotalsCheck, placed: OrdersCheck) -> int:
    """Print the figures; returns the number of failed jobs."""
    failed = sum(1 for result in outcome.values() if not result.get("s"))
    tries = Counter(int(str(result.get("t"))) for result in outcome.values())
    rates = [
        (done_2 - done_1) / (time_2 - time_1)
        for (time_1, done_1), (time_2, done_2) in itertools.pairwise(soak.samples)
        if done_2 < soak.jobs and time_2 > time_1
    ]
    computes = soak.jobs - placed.jobs
    print(
        f"jobs                 {soak.jobs:,}: {computes:,} compute_order_total, {placed.jobs:,} "
        "place_order without an idempotency key; 2 replicas"
    )
    print(f"enqueue (pipelined)  {soak.enqueue_s:.2f}s = {soak.jobs / soak.enqueue_s:,.0f} jobs/s")
    print(f"wall time            {soak.elapsed_s:.1f}s from first enqueue to last result")
    print(f"throughput           {soak.jobs / soak.elapsed_s:,.0f} jobs/s overall")
    print(f"Redis commands       {soak.redis_commands / soak.jobs:.1f} per job")
    if rates:
        print(
            f"rate per sample      median {statistics.median(rates):,.0f}, "
            f"min {min(rates):,.0f}, max {max(rates):,.0f} jobs/s ({SAMPLE_EVERY_S:g}s samples)"
        )
    report_faults(soak, outcome)
    print(f"results              {len(outcome):,} of {soak.jobs:,}; failed {failed}")
    print(f"tries                {dict(sorted(tries.items()))}")
    print(
        f"orders placed        {placed.jobs - placed.lost:,} jobs with an order; "
        f"{placed.duplicates} duplicates, {placed.lost} lost, {placed.misreported} misreported"
    )
    wrong, dead = check.wrong + check.absent, check.dead_letters
    print(f"order_totals         {check.stored:,} rows, {wrong} wrong; dead letters {dead}")
    return failed


def report_faults(soak: Soak, outcome: Results) -> None:
    seen: set[str] = set()  # a job orphaned by one fault may still be in flight at the next
    for n, fault in enumerate(soak.faults, start=1):
        own = [job_id for job_id in fault.in_flight if job_id not in seen]
        seen.update(own)
        # The victim's jobs: their successful run started after the fault.
        rerun = sum(1 for job_id in own if int(str(outcome[job_id]["st"])) > fault.struck_at_ms)
        recovery = "never" if fault.recovery_s is None else f"{fault.recovery_s:.1f}s"
        after = f"replacement ready in {fault.restart_s:.1f}s"
        if fault.kind == "SIGSTOP":
            after = f"SIGCONT after {soak.freeze_s:g}s"
        print(
            f"{fault.kind} {n:<10} at {fault.at_done:,} done: {len(own)} in flight, {rerun} of "
            f"them the victim's (run again), all finished {recovery} after the {fault.kind} "
            f"(lease {LEASE_S:g}s); {after}"
        )
