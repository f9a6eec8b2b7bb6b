"""`orderworker jobs failed` and `jobs retry` as subprocesses, on dead letters written by the real
recorder, against real PostgreSQL and Redis."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db import failed_jobs
from jobs.client import OrderClient, envelope
from tests.integration.test_cli_ops import cli
from worker.settings import Settings

Sessions = async_sessionmaker[AsyncSession]

# job id: (function, kwargs or None for a payload that was not JSON, error code)
DEAD_LETTERS: dict[str, tuple[str, dict[str, Any] | None, str]] = {
    "exhausted-1": ("compute_order_total", {"order_id": 1}, "retries_exhausted"),
    "exhausted-2": ("compute_order_total", {"order_id": 2}, "retries_exhausted"),
    "bad-item": (
        "place_order",
        {"customer_id": 1, "items": [{"item_id": 9, "quantity": 1}]},
        "unknown_item",
    ),
    "crashed": ("compute_order_total", {"order_id": 3}, "internal_error"),
    "garbled": ("place_order", None, "undecodable_payload"),
}


async def record(sessions: Sessions, job_ids: list[str] | None = None) -> None:
    """Dead letters through the worker's own recorder; each failed on its own second of a day."""
    async with sessions.begin() as session:
        for n, (job_id, (function, kwargs, code)) in enumerate(DEAD_LETTERS.items()):
            if job_ids is not None and job_id not in job_ids:
                continue
            payload = None if kwargs is None else envelope(function, kwargs, 0).decode()
            failure = failed_jobs.FailureRecord(job_id, function, "q", payload, code, "it broke", 1)
            await failed_jobs.record_failure(session, failure)
            await session.execute(
                text(
                    "UPDATE failed_jobs SET first_failed_at = :first, last_failed_at = :last"
                    " WHERE job_id = :job_id"
                ),
                {
                    "job_id": job_id,
                    "first": datetime(2026, 3, 1, 10, 0, n, tzinfo=UTC),
                    "last": datetime(2026, 3, 2, 10, 0, n, tzinfo=UTC),
                },
            )


async def remaining(sessions: Sessions) -> list[str]:
    async with sessions() as session:
        rows = await session.execute(text("SELECT job_id FROM failed_jobs ORDER BY job_id"))
        return [job_id for (job_id,) in rows]


async def queued(client: OrderClient) -> list[str]:
    """Job ids waiting in either lane (nothing runs them: no worker in these tests)."""
    found: list[bytes] = []
    for function in ("place_order", "compute_batch_totals"):
        found.extend(await client.redis.zrange(client.lane_queue_of(function), 0, -1))
    return sorted(job_id.decode() for job_id in found)


# ---------------------------------------------------------------- jobs failed


async def test_jobs_failed_shows_the_count_and_the_first_and_last_failure_times(
    settings: Settings, sessionmaker: Sessions
) -> None:
    await record(sessionmaker)

    listed = await cli(settings, "jobs", "failed", "--limit", "2")

    assert listed.returncode == 0, listed.stderr
    header, *lines = listed.stdout.splitlines()
    assert header == (
        "5 failed jobs, first at 2026-03-01 10:00:00Z, last at 2026-03-02 10:00:04Z;"
        " the 2 most recent:"
    )
    assert [line.split()[0] for line in lines] == ["garbled", "crashed"]
    assert "first 2026-03-01 10:00:04Z  last 2026-03-02 10:00:04Z  undecodable_payload" in lines[0]


async def test_jobs_failed_json_adds_the_count_and_times_to_the_listed_rows(
    settings: Settings, sessionmaker: Sessions
) -> None:
    await record(sessionmaker)

    listed = await cli(settings, "jobs", "failed", "--json", "--limit", "1")

    assert listed.returncode == 0, listed.stderr
    body = json.loads(listed.stdout)
    assert set(body) == {"failed", "count", "first_failed_at", "last_failed_at"}
    assert (body["count"], len(body["failed"])) == (5, 1)
    assert body["first_failed_at"] == "2026-03-01T10:00:00+00:00"
    assert body["last_failed_at"] == "2026-03-02T10:00:04+00:00"
    [row] = body["failed"]
    assert set(row) == {
        "job_id",
        "function",
        "error",
        "tries",
        "payload",
        "first_failed_at",
        "last_failed_at",
    }
    assert row["job_id"] == "garbled"


async def test_jobs_failed_filters_by_code(settings: Settings, sessionmaker: Sessions) -> None:
    await record(sessionmaker)

    listed = await cli(
        settings,
        "jobs",
        "failed",
        "--json",
        "--code",
        "retries_exhausted",
        "--code",
        "unknown_item",
    )
    text_listed = await cli(settings, "jobs", "failed", "--code", "retries_exhausted")
    none = await cli(settings, "jobs", "failed", "--code", "expired", "--json")

    body = json.loads(listed.stdout)
    assert sorted(row["job_id"] for row in body["failed"]) == [
        "bad-item",
        "exhausted-1",
        "exhausted-2",
    ]
    assert body["count"] == 3
    assert text_listed.stdout.splitlines()[0].startswith(
        "2 failed jobs, first at 2026-03-01 10:00:00Z"
    )
    assert json.loads(none.stdout) == {
        "failed": [],
        "count": 0,
        "first_failed_at": None,
        "last_failed_at": None,
    }


# ---------------------------------------------------------------- jobs retry


async def test_jobs_retry_help_says_jobs_keep_their_ids(settings: Settings) -> None:
    shown = await cli(settings, "jobs", "retry", "--help")

    assert shown.returncode == 0, shown.stderr
    assert "under their own job ids" in shown.stdout
    assert "new job ids" not in shown.stdout
    assert "--include-permanent" in shown.stdout


async def test_jobs_retry_all_replays_only_failures_a_replay_may_cure(
    settings: Settings, sessionmaker: Sessions, client: OrderClient
) -> None:
    await record(sessionmaker)

    retried = await cli(settings, "jobs", "retry", "--all")

    assert retried.returncode == 0, retried.stderr
    assert retried.stdout == "3 jobs enqueued again\n"
    assert retried.stderr.splitlines() == [
        "skipped 1 permanent failures (unknown_item 1): a replay would fail the same way;"
        " --include-permanent replays them",
        "skipped, no replayable payload: garbled",
    ]
    assert await queued(client) == ["crashed", "exhausted-1", "exhausted-2"]
    assert await remaining(sessionmaker) == ["bad-item", "garbled"]

    again = await cli(settings, "jobs", "retry", "--all", "--include-permanent")

    assert again.returncode == 0, again.stderr
    assert again.stdout == "1 jobs enqueued again\n"
    assert await queued(client) == ["bad-item", "crashed", "exhausted-1", "exhausted-2"]
    assert await remaining(sessionmaker) == ["garbled"]


async def test_jobs_retry_all_with_a_code_replays_only_that_code_and_json_says_what_it_did(
    settings: Settings, sessionmaker: Sessions, client: OrderClient
) -> None:
    await record(sessionmaker)

    retried = await cli(
        settings,
        "jobs",
        "retry",
        "--all",
        "--code",
        "retries_exhausted",
        "--code",
        "unknown_item",
        "--json",
    )

    assert retried.returncode == 0, retried.stderr
    assert json.loads(retried.stdout) == {
        "replayed": ["exhausted-1", "exhausted-2"],
        "skipped": [{"job_id": "bad-item", "code": "unknown_item", "reason": "permanent"}],
        "unknown": [],
    }
    assert await queued(client) == ["exhausted-1", "exhausted-2"]
    assert await remaining(sessionmaker) == ["bad-item", "crashed", "garbled"]


async def test_jobs_retry_names_the_ids_that_were_not_failed_jobs(
    settings: Settings, sessionmaker: Sessions, client: OrderClient
) -> None:
    await record(sessionmaker)

    # Named ids are replayed whatever their code; the unknown ones are named back.
    retried = await cli(settings, "jobs", "retry", "bad-item", "nope-1", "crashed", "nope-2")
    as_json = await cli(settings, "jobs", "retry", "nope-3", "garbled", "--json")

    assert retried.returncode == 1
    assert retried.stdout == "2 jobs enqueued again\n"
    assert (
        retried.stderr
        == "orderworker: unknown_job: some ids were not failed jobs: nope-1, nope-2\n"
    )
    assert await queued(client) == ["bad-item", "crashed"]
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout) == {
        "replayed": [],
        "skipped": [
            {"job_id": "garbled", "code": "undecodable_payload", "reason": "no_replayable_payload"}
        ],
        "unknown": ["nope-3"],
        "error": {
            "code": "unknown_job",
            "message": "some ids were not failed jobs: nope-3;"
            " skipped, no replayable payload: garbled",
        },
    }
    assert as_json.stderr.splitlines()[-1].startswith("orderworker: unknown_job: ")
    assert await remaining(sessionmaker) == ["exhausted-1", "exhausted-2", "garbled"]


@pytest.mark.parametrize(
    "args",
    [("a", "--code", "unknown_item"), ("a", "--include-permanent"), ("--all", "a"), ()],
    ids=["ids-with-code", "ids-with-include-permanent", "ids-and-all", "neither"],
)
async def test_jobs_retry_refuses_mixed_selections_in_one_line(
    settings: Settings, args: tuple[str, ...]
) -> None:
    refused = await cli(settings, "jobs", "retry", *args)

    assert refused.returncode == 2
    [line] = refused.stderr.strip().splitlines()
    assert line.startswith("orderworker: ")


async def test_a_replayed_job_that_failed_again_meanwhile_keeps_its_new_record(
    sessionmaker: Sessions,
) -> None:
    await record(sessionmaker, ["exhausted-1", "exhausted-2"])
    async with sessionmaker() as session:
        read = await failed_jobs.list_failures(session)
    async with sessionmaker.begin() as session:  # exhausted-1 fails again after it was read
        # Recorded with now(): a later last_failed_at than the one read.
        again = failed_jobs.FailureRecord(
            "exhausted-1", "compute_order_total", "q", None, "x", "x", 2
        )
        await failed_jobs.record_failure(session, again)

    async with sessionmaker.begin() as session:
        removed = await failed_jobs.remove_replayed(session, read)

    assert removed == 1
    assert await remaining(sessionmaker) == ["exhausted-1"]
