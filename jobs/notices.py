"""Done notices for waiters: one subscription to `<queue>:done` per client, shared by its waiters.

A replica publishes a finished job's id once its result is stored. A waiter registers the ids it
waits for, reads their results once the subscription is up (a result stored earlier has no notice
left to deliver), then reads again only when a notice names one of its ids. Notices are optional:
a plain arq worker sends none and one can be lost while the listener reconnects, so waiters keep a
bounded fallback read.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Iterator

from redis.asyncio import Redis

from jobs.channels import ChannelListener

# Results written without a notice are read at most this late: a tenth of today's GET rate per
# waiter, and about a plain arq worker's own 0.5 s poll, so sharing the queue with one stays prompt.
FALLBACK_READ_S = 0.5


class Watch:
    """What a waiter has been told since it last looked: notified ids, or "read everything"."""

    def __init__(self) -> None:
        self._notified: list[str] = []
        self._resync = False
        self._event = asyncio.Event()

    def notify(self, job_id: str) -> None:
        self._notified.append(job_id)
        self._event.set()

    def resync(self) -> None:
        # The listener (re)subscribed: notices sent while it was away are lost, read everything.
        self._resync = True
        self._event.set()

    def drain(self) -> tuple[list[str], bool]:
        """Take what was notified; a read made after this covers every notice taken."""
        notified, resync = self._notified, self._resync
        self._notified, self._resync = [], False
        self._event.clear()
        return notified, resync

    async def wait(self, timeout_s: float) -> None:
        """Until something is notified, or `timeout_s` passes (the fallback read is then due)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), max(0.0, timeout_s))


class DoneNotices:
    """The client's listener on the done channel, started by its first waiter."""

    def __init__(self, redis: Redis, channel: str) -> None:
        self.channel = channel
        self._watches: dict[str, list[Watch]] = {}
        self._all: set[Watch] = set()
        self._listener = ChannelListener(
            redis, channel, self._notified, on_subscribed=self._resubscribed
        )
        self.subscriptions = 0  # times the channel was (re)subscribed, for tests and logs

    @contextlib.contextmanager
    def watching(self, job_ids: Iterable[str]) -> Iterator[Watch]:
        """Route notices for `job_ids` to a new watch until the block ends."""
        watch, ids = Watch(), list(job_ids)
        self._all.add(watch)
        for job_id in ids:
            self._watches.setdefault(job_id, []).append(watch)
        self._listener.start()
        try:
            yield watch
        finally:
            self._all.discard(watch)
            for job_id in ids:
                watches = self._watches.get(job_id, [])
                if watch in watches:
                    watches.remove(watch)
                if not watches:
                    self._watches.pop(job_id, None)

    async def subscribed(self, timeout_s: float) -> bool:
        """Wait (bounded) for the subscription: once it is up, no later notice is missed."""
        self._listener.start()
        subscribed = self._listener.subscribed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(subscribed.wait(), max(0.0, timeout_s))
        return subscribed.is_set()

    async def close(self) -> None:
        await self._listener.close()

    def _resubscribed(self) -> None:
        # Notices sent while the listener was away are lost: every waiter reads everything.
        self.subscriptions += 1
        for watch in self._all:
            watch.resync()

    def _notified(self, data: bytes) -> None:
        job_id = data.decode("utf-8", "replace")
        for watch in self._watches.get(job_id, ()):
            watch.notify(job_id)
