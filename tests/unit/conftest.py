"""Unit-test fixtures, no servers: Redis-facing code runs on a private fakeredis server per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import pytest
from arq import ArqRedis
from arq.constants import result_key_prefix
from arq.jobs import serialize_result

from jobs.client import OrderClient
from jobs.serialization import deserialize, serialize
from worker.harness.polling import poll_until

UNIT_QUEUE = "unit:queue"
__all__ = ["poll_until"]  # re-exported for the test modules
SERVER_FIXTURES = {"servers", "database_url", "redis_url", "engine", "redis", "client", "settings"}


@pytest.fixture(autouse=True)
def _no_servers(request: pytest.FixtureRequest) -> None:
    """Unit tests never reach a real server: asking for one of the root fixtures is a mistake."""
    used = SERVER_FIXTURES.intersection(request.fixturenames)
    assert not used, f"unit tests must not use server fixtures: {sorted(used)}"


@pytest.fixture
async def fake_redis() -> AsyncIterator[ArqRedis]:
    """An ArqRedis (JSON serializer, as in production) over a fresh, private fakeredis server."""
    backing = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    redis = ArqRedis(
        connection_pool=backing.connection_pool,
        job_serializer=serialize,
        job_deserializer=deserialize,
        default_queue_name=UNIT_QUEUE,
    )
    yield redis
    await redis.aclose()
    await backing.aclose()


@pytest.fixture
def order_client(fake_redis: ArqRedis) -> OrderClient:
    return OrderClient(fake_redis, UNIT_QUEUE)


def result_bytes(
    result: Any, *, success: bool = True, function: str = "compute_batch_totals"
) -> bytes:
    """A job result exactly as arq stores it, written with our JSON serializer."""
    data = serialize_result(
        function,
        (),
        {},
        1,
        0,
        success,
        result,
        0,
        0,
        "ref",
        UNIT_QUEUE,
        "job",
        serializer=serialize,
    )
    assert data is not None
    return data


async def store_result(redis: ArqRedis, job_id: str, result: Any, *, success: bool = True) -> None:
    await redis.set(result_key_prefix + job_id, result_bytes(result, success=success))
