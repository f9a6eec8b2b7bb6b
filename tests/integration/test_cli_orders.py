"""`orderworker order place` run as a subprocess against a real worker, PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from decimal import Decimal

import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.conftest import StartWorker, cli_env, run_cli
from worker.settings import Settings

SAMPLE_ORDERS = 3
SAMPLE_LINES = 5


async def place(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """`orderworker order place ARGS`, off the event loop so the in-process worker keeps running."""
    return await asyncio.to_thread(run_cli, "order", "place", *args, env=cli_env(settings))


async def order_lines(
    sessionmaker: async_sessionmaker[AsyncSession], order_id: int
) -> tuple[int, dict[int, int]]:
    """The order's customer id and its lines as {item_id: quantity}."""
    async with sessionmaker() as session:
        customer_id = (
            await session.execute(
                text("SELECT customer_id FROM orders WHERE id = :id"), {"id": order_id}
            )
        ).scalar_one()
        lines = await session.execute(
            text("SELECT item_id, quantity FROM order_items WHERE order_id = :id"),
            {"id": order_id},
        )
        return int(customer_id), {int(item_id): int(quantity) for item_id, quantity in lines}


async def row_counts(sessionmaker: async_sessionmaker[AsyncSession]) -> tuple[int, int]:
    async with sessionmaker() as session:
        orders = (await session.execute(text("SELECT count(*) FROM orders"))).scalar_one()
        lines = (await session.execute(text("SELECT count(*) FROM order_items"))).scalar_one()
    return int(orders), int(lines)


async def test_order_place_json_prints_one_object_with_the_order_id_and_total(
    settings: Settings,
    seeded: None,
    start_worker: StartWorker,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    await start_worker()

    result = await place(settings, "--customer", "1", "--item", "1:2", "--item", "3:1", "--json")

    assert result.returncode == 0, result.stderr
    [line] = result.stdout.splitlines()
    body = json.loads(line)
    assert set(body) == {"order_id", "total", "idempotency_key"}
    assert body["idempotency_key"].startswith("cli-")  # made for the request, none was given
    assert isinstance(body["order_id"], int)
    assert body["total"] == "20.50"
    assert Decimal(body["total"]) == Decimal("2") * Decimal("5.00") + Decimal("10.50")
    assert await order_lines(sessionmaker, body["order_id"]) == (1, {1: 2, 3: 1})


async def test_order_place_prints_the_order_id_and_total_for_people(
    settings: Settings,
    seeded: None,
    start_worker: StartWorker,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    await start_worker()

    result = await place(settings, "--customer", "2", "--item", "4:3")

    assert result.returncode == 0, result.stderr
    found = re.fullmatch(r"order (\d+) placed, total 6\.00\n", result.stdout)
    assert found is not None, result.stdout
    assert await order_lines(sessionmaker, int(found.group(1))) == (2, {4: 3})
    # The key the command made is on stderr: the same command with it is safe to repeat.
    key = re.fullmatch(r"idempotency key (cli-[0-9a-f]{32})\n", result.stderr)
    assert key is not None, result.stderr
    again = await place(settings, "--customer", "2", "--item", "4:3", "--idempotency-key", key[1])
    assert again.returncode == 0, again.stderr
    assert again.stdout == result.stdout
    assert again.stderr == ""  # a given key is not echoed back
    assert await row_counts(sessionmaker) == (SAMPLE_ORDERS + 1, SAMPLE_LINES + 1)


async def test_order_place_with_the_same_idempotency_key_returns_the_first_order(
    settings: Settings,
    seeded: None,
    start_worker: StartWorker,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    await start_worker()
    args = ("--customer", "3", "--item", "2:7", "--idempotency-key", "checkout-42", "--json")

    first = await place(settings, *args)
    second = await place(settings, *args)

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert json.loads(first.stdout) == json.loads(second.stdout)
    assert json.loads(first.stdout)["total"] == "7.00"
    async with sessionmaker() as session:
        keyed = await session.execute(
            text("SELECT count(*) FROM orders WHERE idempotency_key = 'checkout-42'")
        )
        assert keyed.scalar_one() == 1
    assert await row_counts(sessionmaker) == (SAMPLE_ORDERS + 1, SAMPLE_LINES + 1)

    # The key names that request: another basket under it is refused, as bad input.
    other = await place(settings, "--customer", "3", "--item", "2:8", *args[4:6])

    assert other.returncode == 2
    assert other.stdout == ""
    assert other.stderr.strip() == (
        "orderworker: idempotency_conflict: idempotency key 'checkout-42' was first used with"
        " other lines; send a new key for a new order"
    )
    assert await row_counts(sessionmaker) == (SAMPLE_ORDERS + 1, SAMPLE_LINES + 1)


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["1"], "expected ITEM_ID:QUANTITY"),
        (["1:0"], "greater than or equal to 1"),
        (["1:2", "3:1", "1:5"], "duplicate item ids: 1"),
    ],
    ids=["no-quantity", "zero-quantity", "duplicate-item"],
)
async def test_order_place_rejects_malformed_lines_before_enqueueing(
    settings: Settings,
    seeded: None,
    redis: Redis,
    sessionmaker: async_sessionmaker[AsyncSession],
    items: list[str],
    message: str,
) -> None:
    item_args = [arg for item in items for arg in ("--item", item)]

    result = await place(settings, "--customer", "1", *item_args)

    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert message in line
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert await redis.zcard(settings.queue_name) == 0
    assert await row_counts(sessionmaker) == (SAMPLE_ORDERS, SAMPLE_LINES)


@pytest.mark.parametrize(
    ("customer", "item", "code"),
    [("99", "1:1", "unknown_customer"), ("1", "42:1", "unknown_item")],
)
async def test_order_place_reports_unknown_references_as_bad_input(
    settings: Settings,
    seeded: None,
    start_worker: StartWorker,
    sessionmaker: async_sessionmaker[AsyncSession],
    customer: str,
    item: str,
    code: str,
) -> None:
    await start_worker()

    result = await place(settings, "--customer", customer, "--item", item, "--json")

    assert result.returncode == 2
    body = json.loads(result.stdout)
    assert set(body) == {"job_id", "error", "idempotency_key"}
    assert body["error"]["code"] == code
    assert f"orderworker: {code}: " in result.stderr
    assert await row_counts(sessionmaker) == (SAMPLE_ORDERS, SAMPLE_LINES)


async def test_order_place_timing_out_says_the_order_may_be_placed_and_how_to_retry_safely(
    settings: Settings,
    seeded: None,
    start_worker: StartWorker,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    args = ("--customer", "1", "--item", "1:2", "--item", "4:1", "--timeout", "0.5")

    timed_out = await place(settings, *args)  # no worker yet: the job stays queued

    assert timed_out.returncode == 1
    assert timed_out.stdout == ""
    key_line, verdict = timed_out.stderr.strip().splitlines()
    key = key_line.removeprefix("idempotency key ")
    assert verdict.startswith("orderworker: timeout: no result within 0.5s")
    assert "the order may still be placed" in verdict
    retry = f"orderworker order place --customer 1 --item 1:2 --item 4:1 --idempotency-key {key}"
    assert verdict.endswith(retry)

    await start_worker()  # the queued job runs now; the suggested retry finds its order
    retried = await place(settings, *retry.split()[3:], "--json")

    assert retried.returncode == 0, retried.stderr
    body = json.loads(retried.stdout)
    assert body["idempotency_key"] == key
    assert await order_lines(sessionmaker, body["order_id"]) == (1, {1: 2, 4: 1})
    assert await row_counts(sessionmaker) == (SAMPLE_ORDERS + 1, SAMPLE_LINES + 2)


async def test_order_place_timing_out_with_json_prints_one_object_naming_the_key(
    settings: Settings, seeded: None, redis: Redis
) -> None:
    result = await place(settings, "--customer", "1", "--item", "1:1", "--timeout", "0.2", "--json")

    assert result.returncode == 1
    body = json.loads(result.stdout)
    assert set(body) == {"job_id", "error", "idempotency_key"}
    assert body["error"]["code"] == "timeout"
    assert f"--idempotency-key {body['idempotency_key']}" in body["error"]["message"]
    assert await redis.zscore(settings.queue_name, body["job_id"]) is not None  # still queued
