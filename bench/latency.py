"""Interactive latency, a mode of the benchmark (`uv run python -m bench.run --latency`): with two
replicas, jobs written as README's raw producer writes them (SET the envelope, ZADD the queue, then
PUBLISH the wake channel, one pipeline per job) on a fixed schedule, each timed from its send to
the moment its result key exists; idle, and while `orderworker totals --all` runs. Then the batch's
rate alone and under interactive load, and what an idle replica spends in CPU."""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from arq.constants import job_key_prefix, result_key_prefix

from bench.measure import Outcome
from bench.processes import Child, cpu_seconds
from bench.report import Row
from bench.rows import held_to, rate_row
from bench.stack import Bench, clear_queue_keys, say, truncate_totals
from jobs.client import JOB_EXPIRY_MS
from jobs.lanes import lane_queue, wake_channel
from worker.harness.checks import check_totals
from worker.harness.polling import poll_until

RATES = {50: 10.0, 500: 5.0}  # jobs/s: seconds a phase sends for
FUNCTIONS = ("place_order", "compute_order_total")
LOAD_RATE = 50  # place_order jobs/s during the batch: the interactive load of the latency target
REPLICAS = 2
RESULT_POLL_S = 0.001
RESULTS_AFTER_POLL_S = 0.05  # with results_after: outstanding results read this often at the end
POLL_WINDOW = 200  # oldest outstanding keys per MGET: jobs run in queue order, 40 slots at a time
RESULTS_TIMEOUT_S = 300.0
IDLE_CPU_S = 10.0
TARGETS_MS = {False: {50: 5.0, 99: 20.0}, True: {99: 100.0}}  # place_order at 50/s: idle, batch
BATCH_RATIO, CPU_TARGET = 0.9, 1.0
BATCH_PAIRS = 3  # alone then loaded, this many times: one pair's ratio moves 0.1 with the machine


@dataclass(slots=True)
class Phase:
    function: str
    rate: int
    during_batch: bool
    latencies_ms: list[float] = field(default_factory=list)
    job_ids: list[str] = field(default_factory=list)
    failed: int = 0
    batch_running: bool = False  # a batch's chunks are queued or running now
    in_batch: int = 0  # jobs sent while one was
    sending_s: float = 0.0  # from the first send to the last (the schedule's length if kept)
    batch_ids: list[str] = field(default_factory=list)
    harness_core: float = 0.0  # share of a core this process used, sending and polling
    stop: asyncio.Event = field(default_factory=asyncio.Event)  # sends no more once set
    endless: bool = False  # sends until `stop`, not for the phase's length
    # Results read only once sending stops, each timed to its finish: a load, not a row, whose
    # producer should cost no more than a producer (the latency rows' 1 ms poll: 10-25% of a core).
    results_after: bool = False

    @property
    def jobs(self) -> int:
        return sys.maxsize if self.endless else round(self.rate * RATES[self.rate])


async def produce(bench: Bench, queue: str, phase: Phase, sent: dict[str, float]) -> None:
    """Open loop: job n is sent at start + n / rate, whether or not earlier ones have finished."""
    started, label = time.monotonic(), f"{queue}:{phase.function}:{phase.rate}:{phase.during_batch}"
    sends = []  # not awaited one by one: a slow reply must not hold back the next send
    while not phase.stop.is_set() and (n := len(phase.job_ids)) < phase.jobs:
        await asyncio.sleep(max(0.0, started + n / phase.rate - time.monotonic()))
        job_id, now_ms = f"{label}:{n}", int(time.time() * 1000)
        item = {"item_id": 1 + n % 4, "quantity": 1 + n % 3}  # the sample data's items, customers
        kwargs = {"customer_id": 1 + n % 3, "items": [item], "idempotency_key": job_id}
        if phase.function == "compute_order_total":
            kwargs = {"order_id": bench.first_id + n % bench.orders}
        envelope = {"t": 1, "f": phase.function, "a": [], "k": kwargs, "et": now_ms}
        pipe = bench.redis.pipeline(transaction=False)
        pipe.set(job_key_prefix + job_id, json.dumps(envelope), px=JOB_EXPIRY_MS)
        pipe.zadd(queue, {job_id: now_ms})
        pipe.publish(wake_channel(queue), "1")
        sent[job_id] = time.monotonic()
        phase.job_ids.append(job_id)
        phase.in_batch += phase.batch_running
        sends.append(asyncio.create_task(pipe.execute()))
        phase.sending_s = time.monotonic() - started
    await asyncio.gather(*sends)


async def run_phase(bench: Bench, queue: str, phase: Phase) -> None:
    """Send the phase's jobs, and wait for every result; the latencies go into `phase`."""
    sent: dict[str, float] = {}
    producer = asyncio.create_task(produce(bench, queue, phase, sent))
    started, cpu = time.monotonic(), time.process_time()
    if phase.results_after:
        await producer  # nothing is read while sending: the load costs what its producer costs
    while not producer.done() or sent:
        await asyncio.sleep(RESULTS_AFTER_POLL_S if phase.results_after else RESULT_POLL_S)
        await record(bench, phase, sent, list(itertools.islice(sent, POLL_WINDOW)))
        if time.monotonic() - started - phase.sending_s > RESULTS_TIMEOUT_S:
            raise RuntimeError(f"{len(sent)} results missing after {RESULTS_TIMEOUT_S:g}s")
    await producer
    phase.harness_core = (time.process_time() - cpu) / (time.monotonic() - started)


async def record(bench: Bench, phase: Phase, sent: dict[str, float], ids: list[str]) -> None:
    """The latency and outcome of each of `ids` whose result exists now: until it was seen, or
    with `results_after`, until the replica finished it (arq's `ft`, ms since the epoch)."""
    found = await bench.redis.mget([result_key_prefix + i for i in ids]) if ids else []
    seen, epoch = time.monotonic(), time.time() - time.monotonic()
    for job_id, raw in zip(ids, found, strict=True):
        if raw is not None and job_id in sent:
            result = json.loads(raw)
            done = result["ft"] / 1000 - epoch if phase.results_after else seen
            phase.latencies_ms.append((done - sent.pop(job_id)) * 1000)
            phase.failed += not result["s"]


async def batch(bench: Bench, queue: str, label: str) -> asyncio.Task[Any]:
    """`totals --all` started, once its chunks are queued (or it has ended)."""
    cli = asyncio.create_task(bench.cli(label, queue, "totals", "--all"))

    async def chunks_queued() -> bool:
        # Chunk jobs are named totals:<batch id>:<n>; before lanes they share the queue.
        for lane in (queue, lane_queue(queue, "batch")):
            async for _ in bench.redis.zscan_iter(lane, "totals:*"):
                return True
        return cli.done()

    await poll_until(chunks_queued, f"{label}: chunks queued", 60.0, 0.005)
    return cli


async def batch_done(cli: asyncio.Task[Any], phase: Phase) -> tuple[int, float]:
    """The batch's orders and wall time, once it has ended well."""
    finished, summary = await cli
    if finished.returncode != 0 or summary["failed"]:
        raise RuntimeError(f"totals --all: exit {finished.returncode}, {str(summary)[:300]}")
    phase.batch_ids.append(summary["batch_id"])
    return int(summary["computed"]), finished.seconds


async def during_batch(bench: Bench, queue: str, phase: Phase) -> None:
    """The phase sent while `totals --all` runs, the batch started again whenever it ends first."""
    sending = None
    while len(phase.job_ids) < phase.jobs:
        label = f"lat-{phase.function}-{phase.rate}-batch{len(phase.batch_ids) + 1}"
        cli = await batch(bench, queue, label)
        phase.batch_running = True
        if sending is None:
            sending = asyncio.create_task(run_phase(bench, queue, phase))
        await batch_done(cli, phase)
        phase.batch_running = False
    assert sending is not None
    await sending


async def batch_rate(bench: Bench, queue: str, loaded: bool) -> tuple[Outcome, Phase]:
    """`totals --all` from an empty order_totals, alone or under place_order at LOAD_RATE."""
    await truncate_totals(bench.engine)
    phase = Phase("place_order", LOAD_RATE, loaded, endless=True, results_after=True)
    load = asyncio.create_task(run_phase(bench, queue, phase)) if loaded else None
    cli = await batch(bench, queue, f"lat-batch-{'loaded' if loaded else 'alone'}")
    computed, seconds = await batch_done(cli, phase)
    phase.stop.set()
    if load is not None:
        await load
    check = await check_totals(bench.engine)  # every order, placed ones too
    return Outcome(computed, seconds, verification=check), phase


@dataclass(slots=True)
class BatchPair:
    """The batch alone, then under interactive load, one right after the other."""

    alone: Outcome
    loaded: Outcome
    phases: tuple[Phase, Phase]

    @property
    def ratio(self) -> float:
        return self.loaded.rate / self.alone.rate


async def batch_pair(bench: Bench, queue: str) -> BatchPair:
    (alone, first), (loaded, load) = [await batch_rate(bench, queue, x) for x in (False, True)]
    return BatchPair(alone, loaded, (first, load))


async def idle_cpu(replicas: list[Child]) -> list[float]:
    """% of one core each replica used over IDLE_CPU_S with nothing queued."""
    before = [cpu_seconds(replica.process.pid) for replica in replicas]
    await asyncio.sleep(IDLE_CPU_S)  # the measured window itself
    used = [cpu_seconds(r.process.pid) - b for r, b in zip(replicas, before, strict=True)]
    return [seconds / IDLE_CPU_S * 100 for seconds in used]


async def run_latency(bench: Bench) -> tuple[list[Row], bool]:
    """Every phase, the batch's rate and idle CPU; the rows, and whether every check passed."""
    queue = bench.queue("latency")
    replicas = await bench.start_replicas("latency", queue, REPLICAS)
    phases = [
        Phase(f, rate, during) for during in (False, True) for f in FUNCTIONS for rate in RATES
    ]
    try:
        for phase in phases[:4]:
            await run_phase(bench, queue, phase)
            say(f"- {phase_row(phase).name}: {phase_row(phase).note}")
        cpu = await idle_cpu(replicas)
        for phase in phases[4:]:
            await during_batch(bench, queue, phase)
            say(f"- {phase_row(phase).name}: {phase_row(phase).note}")
        pairs = [await batch_pair(bench, queue) for _ in range(BATCH_PAIRS)]
    finally:
        await asyncio.gather(*(replica.stop() for replica in replicas))
    phases += [phase for pair in pairs for phase in pair.phases]
    for phase in phases:
        await clear_queue_keys(bench.redis, queue, phase.job_ids, phase.batch_ids)
    rows = [phase_row(phase) for phase in phases[:8]] + other_rows(pairs, cpu)
    checked = all(pair.alone.ok and pair.loaded.ok for pair in pairs)
    ok = checked and not any(phase.failed for phase in phases)
    return rows, ok


def percentiles(phase: Phase) -> dict[int, float]:
    cuts = statistics.quantiles(phase.latencies_ms, n=100, method="inclusive")
    return {50: cuts[49], 90: cuts[89], 99: cuts[98]}


def phase_row(phase: Phase) -> Row:
    found, during = percentiles(phase), phase.during_batch
    targeted = phase.function == "place_order" and phase.rate == 50
    targets = TARGETS_MS[during] if targeted else {}
    note = " / ".join(f"p{p} {ms:.1f}" for p, ms in found.items())
    note += f" / max {max(phase.latencies_ms):.1f} ms; {phase.failed} failed"
    note += f"; harness {phase.harness_core:.0%} of a core"
    if during:
        note += f"; {phase.in_batch / phase.jobs:.0%} sent while chunks were queued or running"
        note += f" ({len(phase.batch_ids)} batch run{'s' if len(phase.batch_ids) > 1 else ''})"
    name = f"`{phase.function}` at {phase.rate}/s, " + ("during a batch" if during else "idle")
    passed = all(found[p] <= ms for p, ms in targets.items()) and not phase.failed
    return Row(
        name,
        f"{len(phase.latencies_ms):,} jobs",
        phase.sending_s,
        found[99],
        "ms p99",
        target=", ".join(f"p{p} <= {ms:g} ms" for p, ms in targets.items()),
        passed=passed if targets else None,
        note=note,
    )


def other_rows(pairs: list[BatchPair], cpu: list[float]) -> list[Row]:
    """The batch alone and under load (the pair of the median ratio), then idle replicas' CPU."""
    ratios = ", ".join(f"{pair.ratio:.2f}x" for pair in pairs)
    pair = sorted(pairs, key=lambda pair: pair.ratio)[len(pairs) // 2]
    alone, loaded, load = pair.alone, pair.loaded, pair.phases[1]
    loaded_note = f"{len(load.job_ids):,} place_order sent, p99 {percentiles(load)[99]:.1f} ms"
    loaded_note += f" to their finish; their producer {load.harness_core:.0%} of a core"
    loaded_note += f"; the median of {len(pairs)} pairs, alone then loaded: {ratios}"
    return [
        rate_row("`totals --all`, 2 replicas, alone", alone, "orders", "CLI wall time"),
        held_to(
            f"`totals --all`, 2 replicas, under place_order at {LOAD_RATE}/s",
            loaded,
            "orders",
            f"CLI wall time; {loaded_note}",
            baseline=(alone, "alone"),
            target=BATCH_RATIO,
            target_text=f">= {BATCH_RATIO}x",
        ),
        Row(
            f"idle replica: CPU over {IDLE_CPU_S:g} s, nothing queued",
            "",
            IDLE_CPU_S,
            max(cpu),
            "% of a core",
            target=f"<= {CPU_TARGET:g}%",
            passed=max(cpu) <= CPU_TARGET,
            note="highest of the replicas; all: " + ", ".join(f"{c:.2f}%" for c in cpu),
        ),
    ]
