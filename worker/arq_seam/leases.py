"""Leases: a replica's claims live as long as its one liveness key, not as long as arq's TTL.

arq 0.28.0 `Worker.start_jobs` writes `arq:in-progress:<id>` = `1` for `in_progress_timeout_s`
(the largest job timeout + 10 s): a dead worker's jobs wait that long. Our claim writes the
owning replica's id instead (lane_claims.py), and each replica keeps one key,
`orderworker:lease:<queue>:<replica_id>`, alive with PX `lease_s`, rewritten every lease_s / 3
by a task of its own: one round trip per beat for the whole replica, none per job. A claim whose
owner's key is gone may be taken over by another replica (a reclaim); a finish, retry or dead
letter is written only while the in-progress key still names its replica (fencing, scripts.py
and lane_finish.py). arq's TTL stays on the in-progress key as a backstop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog
from redis.asyncio import Redis

from jobs.connection import REDIS_ERRORS

log = structlog.get_logger("orderworker.worker")

LEASE_KEY_PREFIX = "orderworker:lease:"
BEATS_PER_LEASE = 3
# A renewal that meets an outage can take a lease (its timeout) plus a period to be retried: two
# leases of our own renewals cover any live replica's first renewal after the same outage.
LEASES_BEFORE_RECLAIM = 2
# arq's own claim value: a plain arq worker's job, honoured until arq's TTL ends it.
ARQ_CLAIM_VALUE = "1"


def lease_prefix(queue_name: str) -> str:
    return f"{LEASE_KEY_PREFIX}{queue_name}:"


def lease_key(queue_name: str, replica_id: str) -> str:
    return lease_prefix(queue_name) + replica_id


class LeaseKeeper:
    def __init__(self, queue_name: str, replica_id: str, lease_s: float) -> None:
        self.key = lease_key(queue_name, replica_id)
        self.replica_id = replica_id
        self.lease_s = lease_s
        # Since when every beat has reached Redis (monotonic); None while one is failing.
        self._healthy_since: float | None = None
        self._renewed_at = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self, redis: Redis) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._keep(redis))

    async def beat(self, redis: Redis) -> None:
        """One renewal, bounded: a Redis that hangs must not hold the keeper past a lease."""
        # Counted from before the send: Redis may set the key any time after it, never before.
        sent = time.monotonic()
        async with asyncio.timeout(self.lease_s):
            await redis.set(self.key, self.replica_id, px=max(1, int(self.lease_s * 1000)))
        # A gap longer than a lease (a freeze, a stalled loop) starts the count again.
        if self._healthy_since is None or sent - self._renewed_at > self.lease_s:
            self._healthy_since = sent
        self._renewed_at = sent

    def lapsed(self) -> bool:
        """Whether our lease may have expired since it was last renewed: other replicas may have
        taken our claims over (after a freeze, a stalled loop, an outage)."""
        return time.monotonic() - self._renewed_at > self.lease_s

    def may_reclaim(self) -> bool:
        """Another replica's claim is taken over only once ours has been renewed without a gap
        for LEASES_BEFORE_RECLAIM leases: after a Redis outage every lease lapsed, and a live
        replica gets that long to renew its own before anyone decides it is gone."""
        since = self._healthy_since
        wait_s = LEASES_BEFORE_RECLAIM * self.lease_s
        return since is not None and time.monotonic() - since >= wait_s

    async def close(self, redis: Redis | None) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if redis is not None:  # gone on purpose: our claims (none after a drain) free at once
            with contextlib.suppress(*REDIS_ERRORS, TimeoutError):
                await redis.delete(self.key)

    async def _keep(self, redis: Redis) -> None:
        period_s = self.lease_s / BEATS_PER_LEASE
        while True:
            try:
                await self.beat(redis)
            except (*REDIS_ERRORS, TimeoutError) as error:
                if self._healthy_since is not None:
                    log.warning("worker.lease_not_renewed", error=f"{type(error).__name__}")
                self._healthy_since = None
            await asyncio.sleep(period_s)
