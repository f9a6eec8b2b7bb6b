"""The queue reading behind the gauges and `orderworker status`, the collector's once-a-second
cache, and the outcome and label rules of the replica's metrics (fakeredis, no servers)."""

from __future__ import annotations

import asyncio

from arq import ArqRedis
from arq.constants import in_progress_key_prefix
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from jobs.lanes import lane_queue
from tests.unit.conftest import UNIT_QUEUE
from worker.arq_seam.finishing import Finishing
from worker.metrics import UNKNOWN_FUNCTION, QueueCollector, ReplicaMetrics
from worker.queue_depth import read_queue_depth

NOW_MS = 1_800_000_000_000
INTERACTIVE = lane_queue(UNIT_QUEUE, "interactive")
BATCH = lane_queue(UNIT_QUEUE, "batch")


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def gauges(registry: CollectorRegistry) -> dict[str, float]:
    text = generate_latest(registry).decode()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_ready_excludes_running_and_deferred_jobs_in_both_lanes(fake_redis: ArqRedis) -> None:
    await fake_redis.zadd(INTERACTIVE, {"old-running": NOW_MS - 9000, "waiting": NOW_MS - 4000})
    await fake_redis.zadd(INTERACTIVE, {"later": NOW_MS + 60_000})
    await fake_redis.zadd(BATCH, {"chunk-1": NOW_MS - 2500, "chunk-2": NOW_MS - 1000})
    await fake_redis.set(in_progress_key_prefix + "old-running", "replica-a")

    depth = await read_queue_depth(fake_redis, UNIT_QUEUE, now_ms=NOW_MS)

    interactive, batch = depth.lanes["interactive"], depth.lanes["batch"]
    assert (interactive.ready, interactive.deferred, interactive.in_progress) == (1, 1, 1)
    assert interactive.oldest_ready_age_s == 4.0  # the running job is older, but not waiting
    assert (batch.ready, batch.deferred, batch.in_progress, batch.oldest_ready_age_s) == (
        2, 0, 0, 2.5,
    )  # fmt: skip
    assert (depth.ready, depth.deferred, depth.in_progress) == (3, 1, 1)
    assert depth.oldest_ready_age_s == 4.0


async def test_an_empty_or_all_running_queue_has_no_oldest_age(fake_redis: ArqRedis) -> None:
    assert (await read_queue_depth(fake_redis, UNIT_QUEUE, now_ms=NOW_MS)).oldest_ready_age_s == 0
    await fake_redis.zadd(INTERACTIVE, {"running": NOW_MS - 5000})
    await fake_redis.set(in_progress_key_prefix + "running", "replica-a")

    depth = await read_queue_depth(fake_redis, UNIT_QUEUE, now_ms=NOW_MS)

    assert (depth.ready, depth.in_progress, depth.oldest_ready_age_s) == (0, 1, 0.0)


async def test_scrapes_within_a_second_share_one_redis_read(fake_redis: ArqRedis) -> None:
    clock = FakeClock()
    registry = CollectorRegistry()
    collector = QueueCollector(fake_redis, UNIT_QUEUE, asyncio.get_running_loop(), clock=clock)
    registry.register(collector)
    await fake_redis.zadd(INTERACTIVE, {"a": 1, "b": 2})

    # Scrapes come on the HTTP server's thread: the same here, while this loop serves the read.
    first = await asyncio.to_thread(gauges, registry)
    await fake_redis.zadd(INTERACTIVE, {"c": 3})
    clock.now += 0.9
    scrapes = await asyncio.gather(*[asyncio.to_thread(gauges, registry) for _ in range(5)])

    assert first["orderworker_queue_ready_jobs"] == 2
    assert all(scrape["orderworker_queue_ready_jobs"] == 2 for scrape in scrapes)
    assert collector.reads == 1

    clock.now += 0.2  # past the second: the next scrape reads again
    later = await asyncio.to_thread(gauges, registry)

    assert later["orderworker_queue_ready_jobs"] == 3
    assert later["orderworker_queue_oldest_ready_age_seconds"] > 0
    assert collector.reads == 2


async def test_a_redis_error_leaves_the_queue_gauges_out(fake_redis: ArqRedis) -> None:
    registry = CollectorRegistry()
    collector = QueueCollector(fake_redis, UNIT_QUEUE, asyncio.get_running_loop())
    registry.register(collector)
    fake_redis.connection_pool.connection_kwargs["server"].connected = False  # Redis is down

    scrape = await asyncio.to_thread(gauges, registry)

    assert "orderworker_queue_ready_jobs" not in scrape
    assert collector.reads == 1


def test_outcomes_follow_what_arq_decided() -> None:
    finishing = Finishing(ReplicaMetrics(["compute_order_total"]))
    finishing._ran.update({"ok": ("compute_order_total", True), "bad": ("place_order", False)})

    assert finishing.outcome("ok", finish=True) == ("compute_order_total", "success")
    assert finishing.outcome("bad", finish=True) == ("place_order", "failed")
    # A job cut off mid-run (a drain) or retried: arq keeps it queued, finish is False.
    assert finishing.outcome("never-ran", finish=False) == (UNKNOWN_FUNCTION, "retried")
    assert finishing._ran == {}


def test_a_function_nobody_registered_is_counted_as_unknown() -> None:
    metrics = ReplicaMetrics(["compute_order_total"])
    metrics.job_finished("compute_order_total", "success")
    metrics.job_finished("anything-a-producer-wrote", "failed")
    metrics.dead_letter("unknown_function")

    samples = gauges(metrics.registry)
    text = generate_latest(metrics.registry).decode()

    assert "anything-a-producer-wrote" not in text
    assert 'orderworker_jobs_total{function="<unknown>",outcome="failed"} 1.0' in text
    assert 'orderworker_jobs_total{function="compute_order_total",outcome="success"} 1.0' in text
    assert samples["orderworker_dead_letters_total"] == 1
