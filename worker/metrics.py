"""Prometheus metrics of one replica, in a registry of its own, served at /metrics.

Counters and histograms are updated where the seam decides a job's outcome (worker/arq_seam/);
everything else is read when scraped: the replica's slots from its own state, the queue gauges
from Redis through `read_queue_depth`, at most once a second whatever the scrape rate.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from threading import Thread
from typing import Literal
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.asyncio import Redis

from jobs.connection import REDIS_ERRORS
from jobs.lanes import Lane
from worker.queue_depth import QueueDepth, read_queue_depth

Outcome = Literal["success", "failed", "retried"]
UNKNOWN_FUNCTION = "<unknown>"  # any name not registered: producers cannot grow the label set
QUEUE_READ_EVERY_S = 1.0
QUEUE_READ_TIMEOUT_S = 2.0
QUEUE_GAUGES = {  # name: help, in QueueCollector's order
    "orderworker_queue_ready_jobs": "Jobs due and not running, both lanes.",
    "orderworker_queue_deferred_jobs": "Jobs whose time has not come yet, both lanes.",
    "orderworker_queue_in_progress_jobs": "Jobs running on some replica, both lanes.",
    "orderworker_queue_oldest_ready_age_seconds": (
        "How long the oldest ready job has waited since it was due; 0 with none."
    ),
}
QUEUE_GAUGE_NAMES = tuple(QUEUE_GAUGES)
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)


class ReplicaMetrics:
    """The counters and histograms a replica updates as its jobs run."""

    def __init__(self, functions: Collection[str]) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.functions = frozenset(functions)
        self.jobs = Counter(
            "orderworker_jobs",
            "Jobs finished by outcome.",
            ["function", "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "orderworker_job_duration_seconds",
            "Time a job's function ran.",
            ["function"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.wait = Histogram(
            "orderworker_job_wait_seconds",
            "From enqueue to the start of a job's first try.",
            ["function"],
            buckets=WAIT_BUCKETS,
            registry=registry,
        )
        self.dead_letters = Counter(
            "orderworker_dead_letters",
            "Failed jobs recorded in failed_jobs, by error code.",
            ["code"],
            registry=registry,
        )
        self.leases_lost = Counter(
            "orderworker_leases_lost",
            "Finishes discarded: another replica took the job over after this one's lease lapsed.",
            registry=registry,
        )
        self.leases_reclaimed = Counter(
            "orderworker_leases_reclaimed",
            "Jobs taken over from replicas whose lease had lapsed.",
            registry=registry,
        )
        for function in (*self.functions, UNKNOWN_FUNCTION):  # every series exists from the start
            for outcome in ("success", "failed", "retried"):
                self.jobs.labels(function, outcome)
            self.duration.labels(function)
            self.wait.labels(function)

    def label(self, function: str) -> str:
        return function if function in self.functions else UNKNOWN_FUNCTION

    def job_started(self, function: str, wait_s: float) -> None:
        self.wait.labels(self.label(function)).observe(max(0.0, wait_s))

    def job_ran(self, function: str, duration_s: float) -> None:
        self.duration.labels(self.label(function)).observe(duration_s)

    def job_finished(self, function: str, outcome: Outcome) -> None:
        self.jobs.labels(self.label(function), outcome).inc()

    def dead_letter(self, code: str) -> None:
        self.dead_letters.labels(code).inc()


@dataclass(frozen=True, slots=True)
class SlotUse:
    """A replica's slots now: jobs in flight, and per lane (in use, how many it may use)."""

    in_flight: int
    lanes: dict[Lane, tuple[int, int]]


class SlotCollector(Collector):
    """In-flight jobs and lane slots, read from the replica when scraped: no cost per job."""

    def __init__(self, read: Callable[[], SlotUse]) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        use = self.read()
        yield GaugeMetricFamily(
            "orderworker_jobs_in_flight", "Jobs this replica is running.", value=use.in_flight
        )
        in_use = GaugeMetricFamily(
            "orderworker_lane_slots_in_use", "Slots running jobs of each lane.", labels=["lane"]
        )
        slots = GaugeMetricFamily(
            "orderworker_lane_slots", "Slots each lane may use.", labels=["lane"]
        )
        for lane, (used, limit) in use.lanes.items():
            in_use.add_metric([lane], used)
            slots.add_metric([lane], limit)
        yield in_use
        yield slots


class QueueCollector(Collector):
    """The queue gauges, from Redis at most once per `every_s`: scrapes come on the server's
    thread and wait for one read on the replica's event loop, which all of them then share."""

    def __init__(
        self,
        redis: Redis,
        queue_name: str,
        loop: asyncio.AbstractEventLoop,
        *,
        every_s: float = QUEUE_READ_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis, self.queue_name, self.loop = redis, queue_name, loop
        self.every_s, self.clock = every_s, clock
        self.reads = 0
        self._depth: QueueDepth | None = None
        self._read_at: float | None = None
        self._lock = asyncio.Lock()

    def _fresh(self) -> bool:
        return self._read_at is not None and self.clock() - self._read_at < self.every_s

    async def depth(self) -> QueueDepth | None:
        """The last reading if under `every_s` old, else a new one; None if Redis fails."""
        async with self._lock:
            if not self._fresh():
                try:
                    self._depth = await read_queue_depth(self.redis, self.queue_name)
                except REDIS_ERRORS:
                    self._depth = None  # absent beats stale for an autoscaler
                self.reads += 1
                self._read_at = self.clock()
            return self._depth

    def collect(self) -> Iterator[Metric]:
        depth = self._depth if self._fresh() else self._read_from_thread()
        if depth is None:
            return
        values = (depth.ready, depth.deferred, depth.in_progress, depth.oldest_ready_age_s)
        for (name, documentation), value in zip(QUEUE_GAUGES.items(), values, strict=True):
            yield GaugeMetricFamily(name, documentation, value=value)

    def _read_from_thread(self) -> QueueDepth | None:
        future = asyncio.run_coroutine_threadsafe(self.depth(), self.loop)
        try:
            return future.result(QUEUE_READ_TIMEOUT_S)
        except FutureTimeout:
            future.cancel()
            return None


class MetricsServer:
    """prometheus_client's HTTP server on a thread of its own, for one registry."""

    def __init__(self, registry: CollectorRegistry, port: int) -> None:
        self.registry, self.port = registry, port
        self._server: tuple[WSGIServer, Thread] | None = None

    def start(self) -> None:
        self._server = start_http_server(self.port, registry=self.registry)

    async def stop(self) -> None:
        if self._server is not None:
            server, thread = self._server
            self._server = None
            await asyncio.to_thread(server.shutdown)  # waits up to its poll interval: not here
            server.server_close()
            thread.join()
