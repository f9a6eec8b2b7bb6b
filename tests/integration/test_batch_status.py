"""Batches recorded in PostgreSQL: `orderworker totals status`, reruns counted once, Ctrl-C, and
the warning when no replica reports."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from decimal import Decimal

import pytest
from arq.constants import result_key_prefix
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.batches import (
    BatchStatus,
    ChunkRecord,
    batch_status,
    batch_subchunk_size,
    register_chunks,
    running_batches,
)
from db.totals import BatchPart, upsert_totals_for_batch
from jobs.batches import BatchRun
from jobs.client import JobRequest, OrderClient
from tests.conftest import REPO_ROOT, StartWorker, cli_env, poll_until, queued_ids, run_cli
from worker.harness.servers import free_port
from worker.health import live_replicas
from worker.settings import Settings

NO_REPLICA = "no live worker replica is reporting"
StartProcess = Callable[..., subprocess.Popen[str]]


async def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """`orderworker ARGS`, off the event loop so an in-process worker keeps running."""
    return await asyncio.to_thread(run_cli, *args, env=cli_env(settings))


async def status_of(settings: Settings, batch_id: str, *args: str) -> dict[str, object]:
    """`totals status BATCH_ID --json ARGS`: its one line, parsed."""
    result = await cli(settings, "totals", "status", batch_id, "--json", *args)
    assert result.returncode == 0, result.stderr
    [line] = result.stdout.splitlines()
    return dict(json.loads(line))


@pytest.fixture
async def working(seeded: None, start_worker: StartWorker) -> None:
    """The sample orders, and a replica running."""
    await start_worker()


async def test_a_finished_batch_reads_back_the_same_after_its_results_left_redis(
    settings: Settings, working: None, redis: Redis
) -> None:
    submitted = await cli(settings, "totals", "1", "2", "3", "999", "--chunk-size", "2", "--json")
    assert submitted.returncode == 0, submitted.stderr
    summary = json.loads(submitted.stdout)
    assert summary["state"] == "done"
    assert NO_REPLICA not in submitted.stderr
    batch_id = summary["batch_id"]
    removed = await redis.delete(*[f"{result_key_prefix}totals:{batch_id}:{n}" for n in (0, 1)])
    assert removed == 2

    assert await status_of(settings, batch_id) == summary
    assert summary["computed"] == 3
    assert summary["missing"] == [999]
    assert summary["total_sum"] == "42.00"
    plain = await cli(settings, "totals", "status", batch_id)
    assert plain.returncode == 0, plain.stderr
    assert f"batch {batch_id}: done, 4 requested, 3 computed, 1 missing" in plain.stdout


async def test_a_chunk_job_run_again_counts_once(
    settings: Settings,
    working: None,
    client: OrderClient,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    submitted = await cli(settings, "totals", "1", "2", "3", "999", "--chunk-size", "2", "--json")
    assert submitted.returncode == 0, submitted.stderr
    summary = json.loads(submitted.stdout)
    batch_id = summary["batch_id"]

    # The same chunks again: under their own job ids (as `jobs retry` replays them) and under new
    # ones (as a producer repeating itself would).
    chunks = [[1, 2], [3, 999]]
    again = [
        JobRequest("compute_batch_totals", {"order_ids": ids, "batch_id": batch_id}, job_id)
        for index, ids in enumerate(chunks)
        for job_id in (f"totals:{batch_id}:{index}", f"rerun-{batch_id}-{index}")
    ]
    await client.enqueue_many(again)
    outcomes = [await client.wait(request.job_id, 30) for request in again]
    assert all(outcome.success for outcome in outcomes), outcomes
    assert sum(int(outcome.result["computed"]) for outcome in outcomes) == 6  # each ran again

    assert await status_of(settings, batch_id) == summary
    async with sessionmaker() as session:
        recorded = await session.scalar(
            text("SELECT count(*) FROM batch_subchunks WHERE batch_id = :b"), {"b": batch_id}
        )
    assert recorded == 2  # settings: sub-chunks of 25 ids, so one per chunk


async def test_a_chunk_rerun_on_a_replica_configured_otherwise_counts_once(
    settings: Settings,
    seeded: None,
    start_worker: StartWorker,
    client: OrderClient,
    redis: Redis,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """Sub-chunks are recorded by their smallest id: a rerun split otherwise would count the
    ids of some twice. Every run of a batch's chunks splits as its first one did."""
    batch_id, ids = "resplit", [1, 2, 3, 999]
    async with sessionmaker.begin() as session:
        await register_chunks(session, batch_id, [ChunkRecord(0, "resplit-0", 4, ids)], seal=True)
    # By 3: sub-chunks from 1 and 999. By 1, a rerun would add sub-chunks from 2 and 3.
    by_three = await start_worker(totals=settings.totals.model_copy(update={"subchunk_size": 3}))
    request = JobRequest(
        "compute_batch_totals", {"order_ids": ids, "batch_id": batch_id}, "resplit-0"
    )
    await client.enqueue_many([request])
    assert (await client.wait("resplit-0", 30)).success
    by_three.request_stop(signal.SIGTERM)
    await poll_until(lambda: by_three.main_task is None or by_three.main_task.done(), "a stop")
    first = await batch_status_of(sessionmaker, batch_id)

    await start_worker(totals=settings.totals.model_copy(update={"subchunk_size": 1}))
    await redis.delete(result_key_prefix + "resplit-0")  # run again under its own id, and a new one
    again = [request, JobRequest(request.function, request.kwargs, "resplit-new")]
    await client.enqueue_many(again)
    assert all([(await client.wait(job.job_id, 30)).success for job in again])

    assert await batch_status_of(sessionmaker, batch_id) == first
    assert (first.computed, first.missing) == (3, [999])
    async with sessionmaker() as session:
        split = await session.scalar(
            text("SELECT subchunk_size FROM batches WHERE batch_id = :b"), {"b": batch_id}
        )
    assert split == 3


async def test_the_first_chunk_to_run_sets_its_batchs_sub_chunk_size_for_all(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    async with sessionmaker.begin() as session:
        await register_chunks(session, "pinned", [ChunkRecord(0, "pinned-0", 2, [1, 2])], seal=True)
    sizes = []
    for size in (3, 1, 5):  # the first run, then runs on replicas configured otherwise
        async with sessionmaker.begin() as session:
            sizes.append(await batch_subchunk_size(session, "pinned", size))
    async with sessionmaker.begin() as session:
        unregistered = await batch_subchunk_size(session, "nobody-registered-it", 4)
    assert (sizes, unregistered) == ([3, 3, 3], 4)


async def batch_status_of(
    sessionmaker: async_sessionmaker[AsyncSession], batch_id: str
) -> BatchStatus:
    async with sessionmaker() as session:
        status = await batch_status(session, batch_id)
    assert status is not None
    status.updated_at = None  # the figures, not when they were last read
    return status


async def test_a_failed_chunk_shows_under_failed_with_its_error(
    settings: Settings,
    working: None,
    client: OrderClient,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    run = BatchRun(client, "with-a-bad-chunk", sessionmaker)
    await run.submit_chunks([[1, 2], [0]])  # 0 is no order id: that chunk fails for good
    await run.wait(timeout_s=30)

    async with sessionmaker() as session:
        status = await batch_status(session, "with-a-bad-chunk")
    assert status is not None
    assert (status.state, status.requested, status.computed) == ("failed", 3, 2)
    assert status.total_sum == Decimal("42.00")
    [failure] = status.failed
    assert failure["order_ids"] == [0]
    assert failure["error"]["code"] == "invalid_payload"
    result = await cli(settings, "totals", "status", "with-a-bad-chunk")
    assert result.returncode == 1
    assert "with-a-bad-chunk: failed, 3 requested, 2 computed" in result.stdout
    assert "invalid_payload" in result.stdout


async def test_no_wait_records_a_queued_batch_that_status_follows_to_done(
    settings: Settings, seeded: None, start_worker: StartWorker
) -> None:
    submitted = await cli(settings, "totals", "1", "2", "3", "--no-wait", "--json")
    assert submitted.returncode == 0, submitted.stderr
    batch_id = json.loads(submitted.stdout)["batch_id"]
    queued = await status_of(settings, batch_id)
    assert (queued["state"], queued["requested"], queued["computed"]) == ("queued", 3, 0)

    waited_out = await cli(settings, "totals", "status", batch_id, "--wait", "--timeout", "0.5")
    assert waited_out.returncode == 1  # not done when the wait ran out
    assert "queued" in waited_out.stdout
    assert f"orderworker: timeout: batch {batch_id} not done within 0.5s" in waited_out.stderr
    assert waited_out.stderr.count(NO_REPLICA) == 1
    # The status comes from PostgreSQL: a Redis that is down only costs the replica hint.
    no_redis = cli_env(settings, ORDERWORKER_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    args = ("totals", "status", batch_id, "--wait", "--timeout", "0.5", "--json")
    without_redis = await asyncio.to_thread(run_cli, *args, env=no_redis)
    assert without_redis.returncode == 1, without_redis.stderr  # not done, as above
    assert json.loads(without_redis.stdout)["state"] == "queued"
    assert "redis_unavailable" not in without_redis.stderr

    await start_worker()
    done = await status_of(settings, batch_id, "--wait", "--timeout", "30")
    assert done == {
        "batch_id": batch_id,
        "state": "done",
        "requested": 3,
        "computed": 3,
        "missing": [],
        "failed": [],
        "total_sum": "42.00",
    }


async def test_status_says_a_batch_whose_chunk_jobs_redis_lost_cannot_finish(
    settings: Settings, seeded: None, redis: Redis, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """Redis restarted without its data (or the jobs expired): the batch stays queued in
    PostgreSQL, but nothing will ever run it. A wait must not last forever."""
    args = ("totals", "1", "2", "3", "4", "--chunk-size", "2", "--no-wait", "--json")
    submitted = await cli(settings, *args)
    assert submitted.returncode == 0, submitted.stderr
    batch_id = json.loads(submitted.stdout)["batch_id"]
    async with sessionmaker.begin() as session:  # submitted a minute ago
        await session.execute(
            text("UPDATE batches SET updated_at = now() - interval '1 minute' WHERE batch_id = :b"),
            {"b": batch_id},
        )
    held = await cli(settings, "totals", "status", batch_id)
    assert held.returncode == 0, held.stderr
    assert "warning" not in held.stderr  # its jobs are still queued: nothing lost

    lost_job = f"totals:{batch_id}:1"
    assert lost_job in await queued_ids(redis, settings.queue_name)
    await redis.delete(f"arq:job:{lost_job}")  # one of its two chunks, gone with Redis's data

    status = await cli(settings, "totals", "status", batch_id)
    assert status.returncode == 0, status.stderr
    assert "queued" in status.stdout
    lost = f"batch {batch_id} cannot finish: 1 of its chunk jobs are no longer in Redis"
    assert f"orderworker: warning: {lost}" in status.stderr
    assert lost_job in status.stderr
    waited = await cli(settings, "totals", "status", batch_id, "--wait", "--json")  # no timeout
    assert waited.returncode == 1  # not done, and never will be: the wait ends at once
    assert json.loads(waited.stdout)["state"] == "queued"
    assert lost in waited.stderr
    assert "timeout" not in waited.stderr


async def test_chunks_are_looked_for_in_redis_only_once_their_submission_is_over_a_while(
    settings: Settings, seeded: None, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """A submission records its chunks before it enqueues them: just sealed, a chunk not yet in
    Redis is on its way, not lost."""
    chunk = ChunkRecord(index=0, job_id="totals:on-its-way:0", order_count=2, order_ids=[1, 2])
    async with sessionmaker.begin() as session:
        await register_chunks(session, "on-its-way", [chunk], seal=True)  # never enqueued

    just_sealed = await cli(settings, "totals", "status", "on-its-way")
    assert just_sealed.returncode == 0, just_sealed.stderr
    assert "warning" not in just_sealed.stderr
    async with sessionmaker.begin() as session:
        await session.execute(
            text(
                "UPDATE batches SET updated_at = now() - interval '6 seconds'"
                " WHERE batch_id = 'on-its-way'"
            )
        )
    later = await cli(settings, "totals", "status", "on-its-way")
    assert "batch on-its-way cannot finish: 1 of its chunk jobs" in later.stderr


async def test_ctrl_c_names_the_batch_and_its_chunks_still_complete(
    settings: Settings, seeded: None, redis: Redis, worker_processes: StartProcess
) -> None:
    totals = start_cli(settings, "totals", "1", "2", "3", "--chunk-size", "2", "--json")
    try:
        await poll_until(
            lambda: _queued(redis, settings.queue_name, 2), "the chunks queued", timeout_s=30
        )
        # Waiting: its warning that no replica reports is printed at the start of the wait.
        totals.send_signal(signal.SIGINT)
        stdout, stderr = await asyncio.to_thread(totals.communicate, timeout=30)
    finally:
        if totals.poll() is None:
            totals.kill()
    assert totals.returncode == 130, stderr
    [queued_line] = [line for line in stderr.splitlines() if "interrupted" in line]
    assert queued_line.startswith("orderworker: interrupted: batch ")
    batch_id = queued_line.split("batch ", 1)[1].split(" ", 1)[0]
    assert f"orderworker totals status {batch_id} --wait" in queued_line
    interrupted = json.loads(stdout)  # --json: one object, with the id to follow up as a field
    assert (interrupted["batch_id"], interrupted["error"]["code"]) == (batch_id, "interrupted")
    assert "Traceback" not in stderr
    assert len(await queued_ids(redis, settings.queue_name)) == 2  # the batch was left running

    worker_processes()
    done = await status_of(settings, batch_id, "--wait", "--timeout", "60")
    assert (done["state"], done["computed"], done["total_sum"]) == ("done", 3, "42.00")


def start_cli(settings: Settings, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "worker", *args],
        env=cli_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        # As from a terminal: SIGINT is not ignored, whatever this test process does with it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


async def _queued(redis: Redis, queue_name: str, count: int) -> bool:
    return len(await queued_ids(redis, queue_name)) == count


async def test_totals_warns_once_when_no_replica_reports(settings: Settings, seeded: None) -> None:
    result = await cli(settings, "totals", "1", "2", "3", "--timeout", "2", "--json")

    assert result.returncode == 1
    assert result.stderr.count(NO_REPLICA) == 1, result.stderr
    summary = json.loads(result.stdout)
    assert summary["state"] == "queued"
    assert [failure["error"]["code"] for failure in summary["failed"]] == ["timeout"]


async def test_a_live_worker_process_means_no_warning(
    settings: Settings, seeded: None, redis: Redis, worker_processes: StartProcess
) -> None:
    worker_processes()

    async def reporting() -> bool:
        return bool(await live_replicas(redis, settings.queue_name))

    await poll_until(reporting, "a replica reporting", timeout_s=30)
    result = await cli(settings, "totals", "1", "2", "3", "--json")
    assert result.returncode == 0, result.stderr
    assert NO_REPLICA not in result.stderr
    assert json.loads(result.stdout)["state"] == "done"


async def test_status_of_an_unknown_batch_is_one_line_and_exit_2(settings: Settings) -> None:
    result = await cli(settings, "totals", "status", "no-such-batch")
    as_json = await cli(settings, "totals", "status", "no-such-batch", "--json")

    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("orderworker: unknown_batch: no batch 'no-such-batch'")
    assert result.stdout == ""
    assert as_json.returncode == 2
    error = json.loads(as_json.stdout)["error"]
    assert (error["code"], f"orderworker: unknown_batch: {error['message']}") == (
        "unknown_batch",
        line,
    )


async def test_running_batches_lists_the_unfinished_ones_newest_first(
    seeded: None, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    for batch_id in ("finished", "half", "open"):  # one transaction each: submitted in turn
        async with sessionmaker.begin() as session:
            chunks = [
                ChunkRecord(0, f"{batch_id}:0", 2, [1, 2]),
                ChunkRecord(1, f"{batch_id}:1", 1, [3]),
            ]
            await register_chunks(session, batch_id, chunks, seal=batch_id != "open")
    async with sessionmaker() as session:
        await upsert_totals_for_batch(session, [1, 2], BatchPart("finished", "finished:0"))
        await upsert_totals_for_batch(session, [3], BatchPart("finished", "finished:1"))
        await upsert_totals_for_batch(session, [3], BatchPart("half", "half:1"))
        await session.commit()

    async with sessionmaker() as session:
        running = await running_batches(session)
    assert [(status.batch_id, status.state) for status in running] == [
        ("open", "queued"),
        ("half", "running"),
    ]
    assert (running[1].computed, running[1].total_sum) == (1, Decimal("0.00"))
    assert [(status.chunks_done, status.chunks) for status in running] == [(0, 2), (1, 2)]


async def test_a_submission_cut_short_is_sealed_with_the_chunks_it_enqueued(
    seeded: None,
    start_worker: StartWorker,
    client: OrderClient,
    redis: Redis,
    queue_name: str,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    paged = asyncio.Event()

    async def pages() -> AsyncIterator[list[int]]:
        yield [1, 2]
        yield [3]
        paged.set()
        await asyncio.Event().wait()  # the next page never comes: Ctrl-C lands here

    run = BatchRun(client, "cut-short", sessionmaker)
    submitting = asyncio.create_task(run.submit_pages(pages()))
    await asyncio.wait_for(paged.wait(), 30)
    submitting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await submitting

    assert await queued_ids(redis, queue_name) == {"totals:cut-short:0", "totals:cut-short:1"}
    async with sessionmaker() as session:
        status = await batch_status(session, "cut-short")
    assert status is not None
    assert (status.state, status.requested, status.chunks) == ("queued", 3, 2)

    # Sealed: once its two chunks ran, the batch is done (an unsealed one never would be).
    await start_worker()
    await run.wait(timeout_s=30)

    async def done() -> bool:
        async with sessionmaker() as session:
            finished = await batch_status(session, "cut-short")
        return finished is not None and finished.state == "done"

    await poll_until(done, "the cut-short batch done")
