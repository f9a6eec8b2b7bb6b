"""`orderworker totals` as a subprocess: ids from arguments, a file, stdin or the whole table."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import subprocess
import sys
import threading
from decimal import Decimal
from pathlib import Path

import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.seed import generate_orders
from tests.conftest import REPO_ROOT, StartWorker, cli_env, poll_until, queued_ids, run_cli
from worker.settings import Settings

SUMMARY_FIELDS = {"batch_id", "state", "requested", "computed", "missing", "failed", "total_sum"}
GENERATED_ORDERS = 3000
BAR_CHARACTERS = "━█▏▎▍▌▋▊▉╸╺"
LOST_MESSAGE = "no longer in Redis (expired, or lost with Redis's data); submit its orders again"


async def totals(
    settings: Settings, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`orderworker totals ARGS`, off the event loop so the in-process worker keeps running."""
    return await asyncio.to_thread(run_cli, "totals", *args, env=cli_env(settings), stdin=stdin)


@pytest.fixture
async def generated(seeded: None, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    """The sample orders plus a few thousand generated ones."""
    async with sessionmaker.begin() as session:
        await generate_orders(session, GENERATED_ORDERS)


async def expected_totals(sessionmaker: async_sessionmaker[AsyncSession]) -> dict[int, Decimal]:
    """Every order's total, summed here in Python from its lines and item prices."""
    async with sessionmaker() as session:
        expected = {
            int(order_id): Decimal("0.00")
            for order_id in (await session.execute(text("SELECT id FROM orders"))).scalars()
        }
        lines = await session.execute(
            text(
                "SELECT order_items.order_id, order_items.quantity, item.price"
                " FROM order_items JOIN item ON item.id = order_items.item_id"
            )
        )
        for order_id, quantity, price in lines:
            expected[int(order_id)] += Decimal(price) * quantity
    return expected


async def stored_totals(sessionmaker: async_sessionmaker[AsyncSession]) -> dict[int, Decimal]:
    async with sessionmaker() as session:
        rows = await session.execute(text("SELECT order_id, total FROM order_totals"))
        return {int(order_id): Decimal(total) for order_id, total in rows}


async def test_totals_json_summarises_computed_and_missing_orders(
    settings: Settings,
    seeded: None,
    start_worker: StartWorker,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    await start_worker()

    result = await totals(settings, "1", "2", "3", "999", "--json")

    assert result.returncode == 0, result.stderr
    [line] = result.stdout.splitlines()
    summary = json.loads(line)
    assert set(summary) == SUMMARY_FIELDS
    assert summary["requested"] == 4
    assert summary["computed"] == 3
    assert summary["missing"] == [999]
    assert summary["failed"] == []
    assert summary["total_sum"] == "42.00"
    assert summary["state"] == "done"
    assert await stored_totals(sessionmaker) == {
        1: Decimal("30.00"),
        2: Decimal("12.00"),
        3: Decimal("0.00"),
    }


async def test_totals_reads_thousands_of_ids_from_stdin(
    settings: Settings,
    generated: None,
    start_worker: StartWorker,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    await start_worker()
    expected = await expected_totals(sessionmaker)
    ids = "\n".join(str(order_id) for order_id in sorted(expected))

    result = await totals(settings, "--file", "-", "--chunk-size", "250", "--json", stdin=ids)

    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["requested"] == summary["computed"] == len(expected) == GENERATED_ORDERS + 3
    assert summary["missing"] == []
    assert summary["failed"] == []
    assert Decimal(summary["total_sum"]) == sum(expected.values())
    assert await stored_totals(sessionmaker) == expected


async def test_totals_reads_ids_split_by_commas_and_newlines_from_a_file_without_a_bar(
    settings: Settings,
    seeded: None,
    start_worker: StartWorker,
    sessionmaker: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    await start_worker()
    id_file = tmp_path / "ids.txt"
    id_file.write_text("1, 2\n\n3,999\n")

    result = await totals(settings, "--file", str(id_file))

    assert result.returncode == 0, result.stderr
    assert "4 requested, 3 computed, 1 missing, 0 failed jobs, total_sum 42.00" in result.stdout
    # stderr is a pipe, not a TTY: no progress bar.
    assert not set(result.stderr) & set(BAR_CHARACTERS), result.stderr
    assert set(await stored_totals(sessionmaker)) == {1, 2, 3}


def run_with_terminal_stderr(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """`orderworker ARGS` as in a terminal whose stdout is piped on (`totals --json | jq`):
    stderr a pseudo-terminal; the exit code, stdout, and what the terminal was sent."""
    terminal_end, child_end = pty.openpty()
    sent = bytearray()

    def read_terminal() -> None:
        with contextlib.suppress(OSError):  # EIO once the child's end is closed
            while chunk := os.read(terminal_end, 65536):
                sent.extend(chunk)

    command = [sys.executable, "-m", "worker", *args]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=child_end, env=env, cwd=REPO_ROOT
    ) as process:
        os.close(child_end)
        reader = threading.Thread(target=read_terminal)
        reader.start()  # drained as it comes, or a full terminal buffer would stop the child
        stdout, _ = process.communicate(timeout=120)
        reader.join(timeout=10)
    os.close(terminal_end)
    return process.returncode, stdout.decode(), sent.decode(errors="replace")


async def test_totals_draws_its_bar_on_a_terminal_stderr_and_keeps_stdout_for_the_summary(
    settings: Settings, seeded: None, start_worker: StartWorker
) -> None:
    await start_worker()

    code, stdout, terminal = await asyncio.to_thread(
        run_with_terminal_stderr, "totals", "1", "2", "3", "--json", env=cli_env(settings)
    )

    assert code == 0, terminal
    [line] = stdout.splitlines()  # the JSON summary alone, nothing of the bar
    assert json.loads(line)["computed"] == 3
    assert set(terminal) & set(BAR_CHARACTERS), terminal


async def test_totals_all_computes_every_order_page_by_page(
    settings: Settings,
    generated: None,
    start_worker: StartWorker,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    await start_worker()
    expected = await expected_totals(sessionmaker)

    result = await totals(settings, "--all", "--chunk-size", "500", "--json")

    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["requested"] == summary["computed"] == len(expected)
    assert summary["missing"] == []
    assert summary["failed"] == []
    assert Decimal(summary["total_sum"]) == sum(expected.values())
    assert await stored_totals(sessionmaker) == expected


async def test_totals_rejects_a_malformed_id_naming_its_line_and_enqueues_nothing(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    id_file = tmp_path / "ids.txt"
    id_file.write_text("1,2\n3\n12x, 4\n")

    result = await totals(settings, "--file", str(id_file))

    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "line 3" in line
    assert "'12x'" in line
    assert await redis.zcard(settings.queue_name) == 0


@pytest.mark.parametrize("bad_id", ["0", str(2**63)])
async def test_totals_rejects_an_id_out_of_range_and_enqueues_nothing(
    settings: Settings, redis: Redis, bad_id: str
) -> None:
    result = await totals(settings, bad_id, "1", "2")

    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert f"{bad_id} is not an order id" in line
    assert await redis.zcard(settings.queue_name) == 0


@pytest.mark.parametrize("args", [("1", "2", "--all"), ()], ids=["ids-and-all", "nothing"])
async def test_totals_needs_exactly_one_source_of_ids(
    settings: Settings, redis: Redis, args: tuple[str, ...]
) -> None:
    result = await totals(settings, *args, stdin="1\n")

    assert result.returncode == 2
    assert "exactly one" in result.stderr
    assert await redis.zcard(settings.queue_name) == 0


async def test_totals_no_wait_submits_and_the_worker_does_the_jobs_later(
    settings: Settings,
    seeded: None,
    redis: Redis,
    start_worker: StartWorker,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    # No worker yet: the command can only succeed by not waiting for one.
    result = await totals(settings, "1", "2", "3", "--chunk-size", "2", "--no-wait", "--json")

    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["batch_id"]
    assert summary["requested"] == 3
    assert set(summary) == SUMMARY_FIELDS
    assert "3 orders in 2 jobs submitted" in result.stderr
    # Not a finished empty batch: queued, with nothing computed yet.
    assert summary["state"] == "queued"
    assert summary["computed"] == 0
    assert len(await queued_ids(redis, settings.queue_name)) == 2

    await start_worker()

    async def all_stored() -> bool:
        return len(await stored_totals(sessionmaker)) == 3

    await poll_until(all_stored, "the submitted totals")
    assert await stored_totals(sessionmaker) == {
        1: Decimal("30.00"),
        2: Decimal("12.00"),
        3: Decimal("0.00"),
    }


async def test_totals_times_out_with_failed_chunks_when_no_worker_runs(
    settings: Settings, seeded: None
) -> None:
    result = await totals(settings, "1", "2", "3", "--chunk-size", "2", "--timeout", "1", "--json")

    assert result.returncode == 1
    summary = json.loads(result.stdout)
    assert summary["computed"] == 0
    batch_id = summary["batch_id"]
    assert sorted(failure["job_id"] for failure in summary["failed"]) == [
        f"totals:{batch_id}:0",
        f"totals:{batch_id}:1",
    ]
    assert {failure["error"]["code"] for failure in summary["failed"]} == {"timeout"}


async def test_totals_stops_waiting_for_chunks_redis_lost_and_names_them(
    settings: Settings, seeded: None, redis: Redis
) -> None:
    """Redis restarted without its data while `totals` waited (no replica had run the chunks):
    nothing will ever finish them, so the wait ends with them failed, not at the timeout."""
    command = [sys.executable, "-m", "worker", "totals", "1", "2", "3", "--chunk-size", "2"]
    process = await asyncio.create_subprocess_exec(
        *command,
        "--timeout",
        "120",
        "--json",
        env=cli_env(settings),
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:

        async def both_queued() -> bool:
            return len(await queued_ids(redis, settings.queue_name)) == 2

        await poll_until(both_queued, "both chunk jobs queued")
        lost = await queued_ids(redis, settings.queue_name)
        await redis.delete(*(f"arq:job:{job_id}" for job_id in lost))
        async with asyncio.timeout(60):
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    stdout, stderr = out.decode(), err.decode()

    assert process.returncode == 1, stderr
    summary = json.loads(stdout)
    assert summary["failed"] == [
        {"order_ids": ids, "error": {"code": "job_lost", "message": LOST_MESSAGE}}
        for ids in ([1, 2], [3])
    ]
    batch_id = summary["batch_id"]
    assert f"batch {batch_id} cannot finish: 2 of its chunk jobs are no longer in Redis" in stderr
    assert "timeout" not in stderr
