"""The orchestrators' probes against real servers and a real replica process: `health --ready`
names the service that does not answer, and `health --live` follows this host's replica from its
first loop turn to its exit, without any server."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import make_url

from tests.conftest import cli_env, run_cli
from worker.harness.polling import DEADLINE_S, poll_until
from worker.harness.servers import free_port
from worker.settings import Settings

Process = subprocess.CompletedProcess[str]


async def cli(settings: Settings, *args: str, **extra_env: str) -> Process:
    return await asyncio.to_thread(run_cli, *args, env=cli_env(settings, **extra_env))


async def test_ready_when_both_servers_answer(settings: Settings) -> None:
    result = await cli(settings, "health", "--ready")
    assert result.returncode == 0, result.stderr
    database = make_url(settings.database_dsn())
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    # The private stack's URL names a Unix socket's folder (`?host=/dir`): the probe names the
    # socket file in it.
    socket_dir = database.query.get("host")
    if isinstance(socket_dir, str):
        where = f"{socket_dir}/.s.PGSQL.{database.port or 5432}"
    else:
        where = f"{database.host}:{database.port or 5432}"
    assert lines[0].startswith(f"ready: postgresql {where}/{database.database} answered in ")
    assert lines[1].startswith("ready: redis ")


async def test_not_ready_names_the_database_that_does_not_answer(settings: Settings) -> None:
    port = free_port()
    down = make_url(settings.database_dsn()).set(host="127.0.0.1", port=port, password="hunter2")
    down = down.difference_update_query(["host"])  # TCP to a closed port, not the stack's socket
    result = await cli(
        settings,
        "health",
        "--ready",
        "--json",
        ORDERWORKER_DATABASE_URL=down.render_as_string(hide_password=False),
    )
    assert result.returncode == 1
    body = json.loads(result.stdout)
    assert body["healthy"] is False
    postgresql, redis = body["ready"]
    assert (postgresql["service"], postgresql["ok"]) == ("postgresql", False)
    assert postgresql["where"].startswith(f"postgresql 127.0.0.1:{port}/")
    assert "refused" in postgresql["error"].lower()
    assert (redis["service"], redis["ok"]) == ("redis", True)  # the other one still answers
    assert body["error"]["code"] == "not_ready"
    assert body["error"]["message"].startswith(f"postgresql 127.0.0.1:{port}/")
    assert result.stderr.startswith("orderworker: not_ready: postgresql ")
    assert "hunter2" not in result.stdout + result.stderr


async def test_not_ready_names_the_redis_that_does_not_answer(settings: Settings) -> None:
    port = free_port()
    result = await cli(
        settings, "health", "--ready", ORDERWORKER_REDIS_URL=f"redis://127.0.0.1:{port}/0"
    )
    assert result.returncode == 1
    assert result.stdout.startswith("ready: postgresql ")
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"not ready: redis 127.0.0.1:{port} db=0 ssl=False: ConnectionError")


async def test_live_follows_a_replica_process_from_its_first_turn_to_its_exit(
    settings: Settings,
    tmp_path: Path,
    worker_processes: Callable[..., subprocess.Popen[str]],
) -> None:
    private = {"TMPDIR": str(tmp_path)}  # this test's liveness folder, not the host's
    absent = await cli(settings, "health", "--live", **private)
    assert absent.returncode == 1
    assert absent.stdout == ""

    replica = worker_processes(**private)

    async def live() -> bool:
        return (await cli(settings, "health", "--live", "--json", **private)).returncode == 0

    await poll_until(live, "the replica's first loop turn", timeout_s=DEADLINE_S)
    body = json.loads((await cli(settings, "health", "--live", "--json", **private)).stdout)
    [found] = body["live"]
    assert found["pid"] == replica.pid
    assert found["last_turn_age_s"] <= found["stale_after_s"]

    replica.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(replica.wait, DEADLINE_S) == 0
    gone = await cli(settings, "health", "--live", **private)
    assert gone.returncode == 1
    left = await asyncio.to_thread(lambda: list(tmp_path.glob("orderworker-live-*/*.json")))
    assert left == []  # removed on the way out
