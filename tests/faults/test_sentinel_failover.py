"""Redis behind Sentinel, its primary killed mid-batch: Sentinel promotes a replica, the worker
replicas and the producer follow it through their redis+sentinel:// URL, and the batch completes
with every total exact. Replication is asynchronous, so a failover can lose what the primary
acknowledged but had not yet sent to a replica: producers enqueuing through the failover count
how many of their acknowledged jobs the new primary does not have. Producers that WAIT for one
replica lose none."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from arq.constants import job_key_prefix
from redis.asyncio import Redis

from jobs.client import NotReplicatedError, OrderClient, Replication
from jobs.connection import REDIS_ERRORS, redis_settings_from_url
from tests.conftest import poll_until
from tests.faults.conftest import (
    CONCURRENCY,
    RECONNECT_PAUSE_S,
    FaultScenario,
    NewScenario,
    assert_batch_exact,
    wait_for_batch,
)
from worker.harness.sentinel import MASTER_NAME, SentinelSet

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

REPLICAS = 2
PRODUCERS = 4  # enqueuing at once, each one job at a time, through the failover
# Redis writes a command's reply and its replication stream in the same event-loop pass, so a
# primary killed with SIGKILL has sent its replica all but at most the last command of each client.
LOSS_BOUND = PRODUCERS
ENQUEUED_AFTER_FAILOVER = 50  # the producers must get through to the new primary too


@pytest.fixture
def sentinel_set(tmp_path: Path) -> Iterator[SentinelSet]:
    servers = SentinelSet(tmp_path / "sentinel")
    try:
        servers.start()
        yield servers
    finally:
        servers.stop()


@dataclass
class Producers:
    """PRODUCERS tasks enqueuing uniquely named jobs on a queue nobody consumes, until stopped."""

    client: OrderClient
    acknowledged: list[str] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def produce(self) -> None:
        while not self.stopping.is_set():
            job_id = f"probe-{uuid.uuid4().hex}"
            try:
                await self.client.enqueue("compute_order_total", job_id=job_id, order_id=1)
            except ValueError:
                pass  # a retry found the first attempt's job: the new primary has it
            except REDIS_ERRORS:
                await asyncio.sleep(RECONNECT_PAUSE_S)  # no primary yet: nothing acknowledged
                continue
            except NotReplicatedError:
                continue  # no replica took it in time (none is replicating yet): not acknowledged
            self.acknowledged.append(job_id)

    async def missing(self, primary: Redis) -> list[str]:
        found = await primary.exists(*[job_key_prefix + job_id for job_id in self.acknowledged])
        if found == len(self.acknowledged):
            return []
        flags = [await primary.exists(job_key_prefix + job_id) for job_id in self.acknowledged]
        return [job_id for job_id, flag in zip(self.acknowledged, flags, strict=True) if not flag]


async def replicas_in_sync(sentinel: Redis, count: int) -> bool:
    replicas = await sentinel.sentinel_slaves(MASTER_NAME)  # type: ignore[no-untyped-call]
    in_sync = [replica for replica in replicas if replica["master-link-status"] == "ok"]
    return len(in_sync) == count


async def primary_port(sentinel: Redis) -> int:
    """The port of the server Sentinel names as the primary."""
    command = ("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)
    address = await sentinel.execute_command(*command)  # type: ignore[no-untyped-call]
    return int(address[1])


@pytest.mark.parametrize("replicas_to_wait", [0, 1], ids=["no-wait", "wait-1"])
async def test_a_sentinel_failover_mid_batch_loses_no_chunk_and_few_enqueues(
    sentinel_set: SentinelSet, new_scenario: NewScenario, replicas_to_wait: int
) -> None:
    sentinel = Redis.from_url(sentinel_set.sentinel_url, decode_responses=True)
    replicas = len(sentinel_set.replicas)
    await poll_until(lambda: replicas_in_sync(sentinel, replicas), "replicas known to Sentinel")
    scenario = await new_scenario(sentinel_set.url)
    probe_queue = f"faults:{uuid.uuid4().hex[:12]}:probe"
    settings = redis_settings_from_url(sentinel_set.url)
    client = await OrderClient.connect(settings, probe_queue, Replication(replicas_to_wait))
    producers = Producers(client)
    try:
        lost = await _fail_over_mid_batch(sentinel_set, sentinel, scenario, producers)
    finally:
        await sentinel.aclose()
        await producers.client.close()
    acknowledged = len(producers.acknowledged)
    print(
        f"sentinel failover, WAIT {replicas_to_wait}: "
        f"{len(lost)} of {acknowledged} acknowledged enqueues lost"
    )
    assert len(lost) <= (LOSS_BOUND if replicas_to_wait == 0 else 0), lost


async def _fail_over_mid_batch(
    sentinel_set: SentinelSet, sentinel: Redis, scenario: FaultScenario, producers: Producers
) -> list[str]:
    """Kill the primary with a batch stalled and producers enqueuing; the acknowledged jobs the
    new primary does not have, once the batch has completed exactly."""
    workers = [await scenario.spawn() for _ in range(REPLICAS)]
    stalled = await scenario.stall(locked=REPLICAS * CONCURRENCY)
    tasks = [asyncio.create_task(producers.produce()) for _ in range(PRODUCERS)]
    try:
        await poll_until(lambda: len(producers.acknowledged) >= 100, "enqueues before the kill")
        sentinel_set.primary.kill()

        async def promoted() -> bool:
            return await primary_port(sentinel) != sentinel_set.primary.port

        await poll_until(promoted, "Sentinel failover")
        promoted_at = len(producers.acknowledged)
        wanted = promoted_at + ENQUEUED_AFTER_FAILOVER
        await poll_until(lambda: len(producers.acknowledged) >= wanted, "enqueues after failover")
    finally:
        producers.stopping.set()
        await asyncio.gather(*tasks)
    await stalled.release()
    summary = await wait_for_batch(stalled.run)
    await assert_batch_exact(summary, scenario.engine)
    assert all(worker.alive() for worker in workers), "a replica exited over the failover"

    primary = Redis(host="127.0.0.1", port=await primary_port(sentinel))
    try:
        return await producers.missing(primary)
    finally:
        await primary.aclose()


async def sentinel_clients(sentinel: Redis) -> int:
    """Connections Sentinel has from clients, besides the one asking."""
    return len(await sentinel.client_list()) - 1


async def test_a_closed_client_leaves_no_connection_to_sentinel(
    sentinel_set: SentinelSet,
) -> None:
    sentinel = Redis.from_url(sentinel_set.sentinel_url, decode_responses=True)
    try:
        client = await OrderClient.connect(redis_settings_from_url(sentinel_set.url), "probe")
        await client.enqueue("compute_order_total", order_id=1)  # found the primary through it
        assert await sentinel_clients(sentinel) >= 1
        await client.close()
        await poll_until(lambda: _none_left(sentinel), "the client's Sentinel connections closed")
    finally:
        await sentinel.aclose()


async def _none_left(sentinel: Redis) -> bool:
    return await sentinel_clients(sentinel) == 0
