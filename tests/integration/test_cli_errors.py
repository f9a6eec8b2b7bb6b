"""Every failure of `orderworker` as a user meets it, run as real processes against real
servers: one line on stderr naming the service, host and port (never a password), the contract's
exit code, and with --json exactly one `{"error": {"code", "message"}}` object on stdout."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.engine import create_engine
from db.migrate import upgrade_to_head
from jobs.client import OrderClient
from tests.conftest import (
    StartWorker,
    cli_env,
    queued_ids,
    run_cli,
)
from worker.harness.servers import free_port
from worker.settings import Settings

Process = subprocess.CompletedProcess[str]
# Commands that take --json, each with arguments that reach both its servers (if it uses them).
JSON_COMMANDS = {
    "health": ("health",),
    "totals": ("totals", "1", "2"),
    "order place": ("order", "place", "--customer", "1", "--item", "1:1"),
    "jobs failed": ("jobs", "failed"),
}
REDIS_COMMANDS = ["health", "totals", "order place"]


async def cli(settings: Settings, *args: str, **extra_env: str) -> Process:
    return await asyncio.to_thread(run_cli, *args, env=cli_env(settings, **extra_env))


def one_error(result: Process, code: str, exit_code: int, *fields: str) -> str:
    """Checks the failure's shape (the error object, and `fields` beside it); its message."""
    assert result.returncode == exit_code, result.stderr
    assert "Traceback" not in result.stderr
    [stderr_line] = result.stderr.splitlines()
    [stdout_line] = result.stdout.splitlines()
    body: dict[str, Any] = json.loads(stdout_line)
    beside = {field: body.get(field) for field in fields}
    assert body == {"error": {"code": code, "message": body["error"]["message"]}, **beside}
    message: str = body["error"]["message"]
    assert stderr_line == f"orderworker: {code}: {message}"
    return message


@pytest.mark.parametrize("command", REDIS_COMMANDS)
async def test_redis_refusing_the_connection_is_named_with_its_port(
    settings: Settings, command: str
) -> None:
    port = free_port()  # nothing listens there
    url = f"redis://:hunter2@127.0.0.1:{port}/0"

    result = await cli(settings, *JSON_COMMANDS[command], "--json", ORDERWORKER_REDIS_URL=url)

    if command == "order place":  # it may have been queued: the key to retry with is given
        message = one_error(result, "redis_unavailable", 1, "idempotency_key")
        key = json.loads(result.stdout)["idempotency_key"]
        assert message.endswith(f"repeat with the same key: orderworker order place"
                                f" --customer 1 --item 1:1 --idempotency-key {key}")  # fmt: skip
        message = message.split(";")[0]
    else:
        message = one_error(result, "redis_unavailable", 1)
    assert message == f"Redis at 127.0.0.1:{port} refused the connection"
    assert "hunter2" not in result.stdout + result.stderr


async def test_a_redis_database_the_server_does_not_have_is_a_bad_setting(
    settings: Settings,
) -> None:
    redis_url = make_url(settings.redis_dsn().replace("redis://", "postgresql://"))
    url = f"redis://{redis_url.host}:{redis_url.port}/999"

    result = await cli(settings, "health", "--json", ORDERWORKER_REDIS_URL=url)

    message = one_error(result, "invalid_setting", 2)
    assert message.startswith(
        f"ORDERWORKER_REDIS_URL names database 999, which Redis at {redis_url.host}:"
    )


async def test_postgresql_refusing_the_connection_is_named_with_its_port(
    settings: Settings,
) -> None:
    port = free_port()
    url = f"postgresql+asyncpg://app:hunter2@127.0.0.1:{port}/orders"

    result = await cli(settings, "jobs", "failed", "--json", ORDERWORKER_DATABASE_URL=url)

    message = one_error(result, "database_unavailable", 1)
    assert message == f"PostgreSQL at 127.0.0.1:{port} refused the connection"
    assert "hunter2" not in result.stdout + result.stderr


def with_user(database_url: str, user: str, password: str) -> str:
    url = make_url(database_url).set(username=user, password=password)
    return url.render_as_string(hide_password=False)


async def test_a_refused_login_is_reported_at_once_by_the_cli_and_the_worker(
    settings: Settings,
) -> None:
    url = with_user(settings.database_dsn(), f"nobody_{uuid.uuid4().hex[:8]}", "hunter2")

    listed = await cli(settings, "jobs", "failed", "--json", ORDERWORKER_DATABASE_URL=url)
    started = time.monotonic()
    worker = await cli(settings, "worker", ORDERWORKER_DATABASE_URL=url)
    elapsed = time.monotonic() - started

    message = one_error(listed, "database_auth_failed", 1)
    assert "refused the login" in message
    assert worker.returncode == 1
    last_line = worker.stderr.strip().splitlines()[-1]
    assert last_line.startswith("orderworker: database_auth_failed: PostgreSQL at ")
    assert "worker.database_unavailable" not in worker.stderr  # no retries: it will not change
    assert elapsed < 5, f"took {elapsed:.1f}s"  # the retries took 12 s or more
    assert "hunter2" not in listed.stdout + listed.stderr + worker.stderr


async def test_libpq_sslmode_in_the_database_url_is_taken(settings: Settings) -> None:
    url = settings.database_dsn() + ("&" if "?" in settings.database_dsn() else "?")

    result = await cli(
        settings, "jobs", "failed", "--json", ORDERWORKER_DATABASE_URL=url + "sslmode=disable"
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["failed"] == []


@pytest.mark.parametrize("command", ["jobs failed", "totals --all", "db seed"])
async def test_an_unmigrated_database_says_to_run_db_upgrade(
    settings: Settings, empty_database_url: str, command: str
) -> None:
    args = {
        "jobs failed": ("jobs", "failed", "--json"),
        "totals --all": ("totals", "--all", "--json"),
    }
    env = {"ORDERWORKER_DATABASE_URL": empty_database_url}

    result = await cli(settings, *args.get(command, ("db", "seed")), **env)

    if command == "db seed":  # no --json: the one line alone
        assert result.returncode == 1
        assert result.stdout == ""
        assert result.stderr == (
            "orderworker: database_not_migrated: database has no schema:"
            " run `orderworker db upgrade` first\n"
        )
    else:
        message = one_error(result, "database_not_migrated", 1)
        assert message == "database has no schema: run `orderworker db upgrade` first"


async def test_a_database_behind_this_version_says_to_run_db_upgrade(
    settings: Settings, empty_database_url: str
) -> None:
    engine = create_engine(empty_database_url)
    try:
        await upgrade_to_head(engine, "0002")  # as left by the version before
    finally:
        await engine.dispose()
    env = {"ORDERWORKER_DATABASE_URL": empty_database_url}

    result = await cli(settings, "jobs", "failed", "--json", **env)

    message = one_error(result, "database_not_migrated", 1)
    assert message == (
        "database is at revision 0002, this version needs 0003: run `orderworker db upgrade` first"
    )
    upgraded = await cli(settings, "db", "upgrade", **env)
    assert upgraded.stdout == "database at revision 0003\n", upgraded.stderr
    assert (await cli(settings, "jobs", "failed", "--json", **env)).returncode == 0


async def test_a_database_a_later_version_migrated_is_left_as_it_is(
    settings: Settings, empty_database_url: str
) -> None:
    """A pod of the older version restarting mid-rollout: its `db upgrade` (the init container)
    and the replica both go on, as migrations only add."""
    engine = create_engine(empty_database_url)
    try:
        await upgrade_to_head(engine)
        async with engine.begin() as connection:
            await connection.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    finally:
        await engine.dispose()
    env = {"ORDERWORKER_DATABASE_URL": empty_database_url}

    upgraded = await cli(settings, "db", "upgrade", **env)

    assert (upgraded.returncode, upgraded.stdout) == (0, "database at revision 0099\n")
    assert (await cli(settings, "jobs", "failed", "--json", **env)).returncode == 0


async def test_an_order_nobody_answers_times_out_with_one_object(settings: Settings) -> None:
    result = await cli(settings, *JSON_COMMANDS["order place"], "--timeout", "0.5", "--json")

    assert result.returncode == 1, result.stderr
    [stdout_line] = result.stdout.splitlines()
    error = json.loads(stdout_line)["error"]  # beside it, what identifies the order to retry
    assert error["code"] == "timeout"
    assert "0.5s" in error["message"]
    [stderr_line] = result.stderr.splitlines()
    assert stderr_line == f"orderworker: timeout: {error['message']}"


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("order", "place", "--item", "1:1"), "usage"),
        (("order", "place", "--customer", "x", "--item", "1:1"), "usage"),
        (("totals", "1", "--bogus"), "usage"),
        (("order", "place", "--customer", "1", "--item", "1:0"), "invalid_payload"),
        (
            ("order", "place", "--customer", "1", "--item", "2:1", "--item", "2:3"),
            "invalid_payload",
        ),
        (("order", "place", "--customer", "1", "--item", "1-1"), "usage"),
    ],
)
async def test_bad_usage_and_input_are_one_line_exit_2_and_enqueue_nothing(
    settings: Settings, redis: Redis, args: tuple[str, ...], code: str
) -> None:
    result = await cli(settings, *args, "--json")

    one_error(result, code, 2)
    assert await queued_ids(redis, settings.queue_name) == set()


async def test_a_file_that_is_not_utf8_is_one_line_and_exit_2(
    settings: Settings, redis: Redis, tmp_path: Any
) -> None:
    id_file = tmp_path / "ids.txt"
    id_file.write_bytes(b"1\n2\n\xff3\n")

    result = await cli(settings, "totals", "--file", str(id_file), "--json")

    message = one_error(result, "invalid_input", 2)
    assert message == f"--file {id_file}: not UTF-8 text (byte 0xff at offset 4)"
    assert await queued_ids(redis, settings.queue_name) == set()


async def test_a_chunk_size_over_the_payload_cap_is_refused_before_enqueueing(
    settings: Settings, redis: Redis, tmp_path: Any
) -> None:
    id_file = tmp_path / "ids.txt"
    id_file.write_text("\n".join(str(10**14 + n) for n in range(100_000)))

    result = await cli(
        settings, "totals", "--file", str(id_file), "--chunk-size", "100000", "--json"
    )

    message = one_error(result, "usage", 2)
    assert "over the worker's payload cap of 1,048,576" in message
    assert await queued_ids(redis, settings.queue_name) == set()


async def test_a_nul_in_an_idempotency_key_is_invalid_payload_not_a_database_error(
    settings: Settings,
    seeded: None,
    start_worker: StartWorker,
    client: OrderClient,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    await start_worker()

    job_id = await client.place_order(1, [{"item_id": 1, "quantity": 1}], "checkout\x00-42")
    outcome = await client.wait(job_id, 10)

    assert not outcome.success
    assert outcome.result == {
        "code": "invalid_payload",
        "message": "idempotency_key: must not contain a NUL character (PostgreSQL cannot store it)",
    }
    async with sessionmaker() as session:
        codes = await session.scalars(text("SELECT error_code FROM failed_jobs"))
        assert list(codes) == ["invalid_payload"]


async def test_the_worker_and_the_cli_refuse_a_payload_in_the_same_words(
    settings: Settings, seeded: None, start_worker: StartWorker, client: OrderClient
) -> None:
    await start_worker()
    job_id = await client.place_order(1, [{"item_id": 1, "quantity": 0}])
    by_worker = await client.wait(job_id, 10)

    by_cli = await cli(settings, "order", "place", "--customer", "1", "--item", "1:0", "--json")

    assert not by_worker.success
    assert json.loads(by_cli.stdout) == {"error": by_worker.result}


async def test_totals_all_checks_the_chunk_size_against_its_largest_id_before_enqueueing(
    settings: Settings,
    seeded: None,
    redis: Redis,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    async with sessionmaker.begin() as session:
        await session.execute(
            text("INSERT INTO orders (id, customer_id, order_time) VALUES (10^17, 1, now())")
        )

    refused = await cli(settings, "totals", "--all", "--chunk-size", "100000", "--json")
    accepted = await cli(settings, "totals", "--all", "--chunk-size", "50000", "--no-wait")

    assert "over the worker's payload cap" in one_error(refused, "usage", 2)
    assert accepted.returncode == 0, accepted.stderr
    assert len(await queued_ids(redis, settings.queue_name)) == 1  # the accepted batch's chunk


async def test_a_worker_that_cannot_reach_redis_names_it_in_its_last_line(
    settings: Settings,
) -> None:
    port = free_port()

    result = await cli(
        settings, "worker", ORDERWORKER_REDIS_URL=f"redis://:hunter2@127.0.0.1:{port}/0"
    )

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert (
        last_line
        == f"orderworker: redis_unavailable: Redis at 127.0.0.1:{port} refused the connection"
    )
    assert "hunter2" not in result.stderr
