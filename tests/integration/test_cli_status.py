"""`orderworker status` against a real replica: the queue by lane, the replica's heartbeat with
its lane slots, the last hour's failures by code and the running batches as PostgreSQL records
them; `--watch` redraws until Ctrl-C and exits 0."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.batches import ChunkRecord, register_chunks
from db.totals import BatchPart, upsert_totals_for_batch
from jobs.client import OrderClient, envelope
from jobs.lanes import lane_queue
from tests.conftest import REPO_ROOT, StartWorker, cli_env, poll_until, run_cli
from worker.health import live_replicas
from worker.settings import Settings

DEFERRED_S = 600


async def defer(redis: Redis, queue: str, job_id: str, function: str, **kwargs: object) -> None:
    """A job due in ten minutes, written as any producer writes one."""
    due_ms = int((time.time() + DEFERRED_S) * 1000)
    await redis.set(f"arq:job:{job_id}", envelope(function, kwargs, due_ms), px=DEFERRED_S * 2000)
    await redis.zadd(queue, {job_id: due_ms})


async def status_of(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(run_cli, "status", *args, env=cli_env(settings))


async def record_batch(
    sessionmaker: async_sessionmaker[AsyncSession],
    batch_id: str,
    chunks: list[list[int]],
    done: int,
) -> None:
    """A sealed batch of `chunks` whose first `done` chunks computed their totals."""
    records = [
        ChunkRecord(index, f"totals:{batch_id}:{index}", len(ids), ids)
        for index, ids in enumerate(chunks)
    ]
    async with sessionmaker.begin() as session:
        await register_chunks(session, batch_id, records, seal=True)
    async with sessionmaker.begin() as session:
        for record in records[:done]:
            await upsert_totals_for_batch(
                session, chunks[record.index], BatchPart(batch_id, record.job_id)
            )


async def test_status_shows_the_queue_the_replica_failures_and_batches(
    settings: Settings,
    seeded: None,
    start_worker: StartWorker,
    client: OrderClient,
    redis: Redis,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    worker = await start_worker()
    for order_id in (1, 2, 999):
        await client.wait(await client.compute_order_total(order_id), 30)
    queue = settings.queue_name
    for n in range(2):
        await defer(redis, queue, f"later-{n}", "compute_order_total", order_id=1)
    await record_batch(sessionmaker, "b41", [[1, 2]], done=1)  # finished: not shown
    # b42: its first chunk done, the other two queued (deferred, so no replica runs them).
    await record_batch(sessionmaker, "b42", [[1, 2], [3], [999]], done=1)
    for index, order_ids in ((1, [3]), (2, [999])):
        await defer(
            redis, lane_queue(queue, "batch"), f"totals:b42:{index}", "compute_batch_totals",
            order_ids=order_ids, batch_id="b42",
        )  # fmt: skip

    async def beat_counts_the_jobs() -> bool:
        beats = await live_replicas(redis, queue)
        return bool(beats) and beats[0]["jobs_done"] + beats[0]["jobs_failed"] == 3

    await poll_until(beat_counts_the_jobs, "a heartbeat after the jobs")
    shown = await status_of(settings, "--json")

    assert shown.returncode == 0, shown.stderr
    fleet = json.loads(shown.stdout)
    assert {key: fleet["queue"][key] for key in ("ready", "deferred", "in_progress")} == {
        "ready": 0, "deferred": 4, "in_progress": 0,
    }  # fmt: skip
    assert fleet["queue"]["oldest_ready_age_s"] == 0
    assert fleet["queue"]["lanes"]["batch"]["deferred"] == 2
    [replica] = fleet["replicas"]
    assert replica["replica_id"] == worker.replica_id
    assert replica["host"] == socket.gethostname()
    assert replica["lanes"] == {
        "interactive": {"in_use": 0, "slots": 20}, "batch": {"in_use": 0, "slots": 2},
    }  # fmt: skip
    assert (replica["jobs_done"], replica["jobs_failed"], replica["in_flight"]) == (2, 1, 0)
    assert 0 <= replica["last_beat_age_s"] < 3 * settings.worker.health_interval_s
    assert fleet["failed_last_hour"] == {"unknown_order": 1}
    [batch] = fleet["running_batches"]
    assert 0 <= batch.pop("age_s") < 60
    assert batch == {
        "batch_id": "b42", "state": "running", "requested": 4, "computed": 2,
        "chunks_done": 1, "chunks": 3,
    }  # fmt: skip

    text = await status_of(settings)

    assert text.returncode == 0, text.stderr
    [replica_row] = [line.split() for line in text.stdout.splitlines() if worker.replica_id in line]
    assert replica_row[0] == worker.replica_id  # no host column: the id starts with the host
    assert "unknown_order 1" in text.stdout
    assert "1 running batch" in text.stdout
    # By its first cell: the random queue name in the title may hold "b42" too.
    [row] = [line.split() for line in text.stdout.splitlines() if line.split()[:1] == ["b42"]]
    assert row[:5] == ["b42", "running", "4", "2", "1/3"]


async def test_status_refuses_watch_with_json_in_one_line(settings: Settings) -> None:
    refused = await status_of(settings, "--json", "--watch")

    assert refused.returncode == 2
    assert refused.stderr.strip().count("\n") == 0
    assert "--watch" in refused.stderr


def start_watch(env: dict[str, str], output: Path) -> subprocess.Popen[str]:
    with output.open("w") as stdout:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "worker", "status", "--watch"],
            env=env, stdout=stdout, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT,
        )  # fmt: skip


async def test_status_watch_redraws_until_ctrl_c_then_exits_0(
    settings: Settings, start_worker: StartWorker, tmp_path: Path
) -> None:
    worker = await start_worker()
    output = tmp_path / "watch.out"
    # As on a terminal: Rich redraws in place, so each refresh reaches the file.
    env = {**cli_env(settings), "TTY_COMPATIBLE": "1", "COLUMNS": "160"}
    watch = start_watch(env, output)
    try:
        await poll_until(lambda: output.read_text().count("queue ") >= 2, "two redraws")
        watch.send_signal(signal.SIGINT)
        _, stderr = await asyncio.to_thread(watch.communicate, timeout=30)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.communicate()

    assert watch.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert worker.replica_id in output.read_text()
