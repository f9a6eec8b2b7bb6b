"""Idempotency keys on a real PostgreSQL: a key names one request (customer and lines), not one
customer; a repeat returns the first order, another request under the key is refused."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from sqlalchemy import text

from db.orders import IdempotencyConflictError, OrderLine, place_order
from tests.conftest import poll_until
from tests.integration.test_queries import Sessions, place, row_counts


async def keyed_orders(sessions: Sessions, key: str) -> int:
    async with sessions() as session:
        found = await session.execute(
            text("SELECT count(*) FROM orders WHERE idempotency_key = :key"), {"key": key}
        )
        return int(found.scalar_one())


async def test_the_same_request_again_returns_the_first_order_and_writes_nothing(
    seeded: None, sessionmaker: Sessions
) -> None:
    first_id, first_total, first_created = await place(sessionmaker, 1, {2: 3, 4: 1}, key="k-1")
    before = await row_counts(sessionmaker)
    # The same lines in another order are the same basket.
    again_id, again_total, again_created = await place(sessionmaker, 1, {4: 1, 2: 3}, key="k-1")
    assert (first_created, again_created) == (True, False)
    assert again_id == first_id
    assert again_total == first_total == Decimal("5.00")
    assert await row_counts(sessionmaker) == before


@pytest.mark.parametrize(
    ("customer_id", "lines", "difference"),
    [
        (2, {2: 3, 4: 1}, "for another customer"),
        (1, {2: 4, 4: 1}, "with other lines"),  # another quantity
        (1, {2: 3}, "with other lines"),  # a line fewer
        (1, {2: 3, 4: 1, 1: 1}, "with other lines"),  # a line more
        (1, {2: 3, 3: 1}, "with other lines"),  # another item
    ],
    ids=["customer", "quantity", "fewer-lines", "more-lines", "other-item"],
)
async def test_the_key_with_another_request_is_refused_and_nothing_written(
    seeded: None,
    sessionmaker: Sessions,
    customer_id: int,
    lines: dict[int, int],
    difference: str,
) -> None:
    await place(sessionmaker, 1, {2: 3, 4: 1}, key="shared-key")
    before = await row_counts(sessionmaker)
    with pytest.raises(IdempotencyConflictError) as raised:
        await place(sessionmaker, customer_id, lines, key="shared-key")
    message = str(raised.value)
    assert message.startswith(f"idempotency key 'shared-key' was first used {difference}")
    assert "quantity" not in message  # the key is named, not the basket
    assert await row_counts(sessionmaker) == before
    assert await keyed_orders(sessionmaker, "shared-key") == 1


async def test_a_job_run_again_with_other_kwargs_is_refused(
    seeded: None, sessionmaker: Sessions
) -> None:
    async with sessionmaker.begin() as session:
        await place_order(session, 1, [OrderLine(1, 1)], None, job_id="job-7")
    before = await row_counts(sessionmaker)
    with pytest.raises(IdempotencyConflictError, match="job id 'job-7' was first used with"):
        async with sessionmaker.begin() as session:
            await place_order(session, 1, [OrderLine(1, 2)], None, job_id="job-7")
    assert await row_counts(sessionmaker) == before


async def second_is_waiting_on_a_lock(sessions: Sessions) -> bool:
    async with sessions() as session:
        waiting = await session.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )
        return int(waiting.scalar_one()) > 0


async def race(
    sessions: Sessions, first: dict[int, int], second: dict[int, int], key: str
) -> tuple[int, tuple[int, Decimal, bool] | BaseException]:
    """Both placements look the key up before either commits: the second's insert waits on the
    unique key until the first commits, then it must read the first's order and compare."""
    async with sessions.begin() as session:
        lines = [OrderLine(item, quantity) for item, quantity in first.items()]
        winner = await place_order(session, 1, lines, key)
        loser = asyncio.create_task(place(sessions, 1, second, key=key))
        await poll_until(lambda: second_is_waiting_on_a_lock(sessions), "the second insert")
    [outcome] = await asyncio.gather(loser, return_exceptions=True)
    return winner.order_id, outcome


async def test_concurrent_placements_with_one_key_make_one_order(
    seeded: None, sessionmaker: Sessions
) -> None:
    before = await row_counts(sessionmaker)
    winner_id, outcome = await race(sessionmaker, {1: 1, 4: 2}, {4: 2, 1: 1}, key="race")
    assert outcome == (winner_id, Decimal("9.00"), False)
    after = await row_counts(sessionmaker)
    assert after["orders"] == before["orders"] + 1
    assert after["order_items"] == before["order_items"] + 2
    assert await keyed_orders(sessionmaker, "race") == 1


async def test_concurrent_placements_with_one_key_and_two_baskets_place_one_refuse_one(
    seeded: None, sessionmaker: Sessions
) -> None:
    before = await row_counts(sessionmaker)
    _, outcome = await race(sessionmaker, {1: 1}, {1: 2}, key="race-2")
    assert isinstance(outcome, IdempotencyConflictError)
    assert "'race-2' was first used with other lines" in str(outcome)
    after = await row_counts(sessionmaker)
    assert after["orders"] == before["orders"] + 1
    assert after["order_items"] == before["order_items"] + 1
    assert await keyed_orders(sessionmaker, "race-2") == 1
