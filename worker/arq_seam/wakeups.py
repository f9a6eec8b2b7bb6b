"""Wake-ups: a replica waiting for work hears of an enqueue at once instead of a poll later.

arq 0.28.0 `Worker.main` sleeps `poll_delay` between reads of the queue. A producer PUBLISHes on
`<queue>:wake` after an enqueue (jobs/lanes.py); this listener, on a pub/sub connection of its
own, turns each message into a call of `on_wake`. The notice is optional: without it (a plain arq
producer, or this connection lost) the replica still polls every `poll_delay_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from redis.asyncio import Redis

from jobs.connection import REDIS_ERRORS
from jobs.lanes import wake_channel
from worker.arq_seam.backoff import RedisBackoff


class Wakeups:
    def __init__(self, queue_name: str, on_wake: Callable[[], None]) -> None:
        self.channel = wake_channel(queue_name)
        self.on_wake = on_wake
        self.subscribed = False
        self._backoff = RedisBackoff(
            unavailable="worker.wake_unavailable", recovered="worker.wake_resubscribed"
        )
        self._task: asyncio.Task[None] | None = None

    def start(self, redis: Redis) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._listen(redis))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _listen(self, redis: Redis) -> None:
        # A lost connection is resubscribed after the same backoff as the poll loop's; never ends.
        while True:
            await self._backoff.run(lambda: self._subscribed(redis))

    async def _subscribed(self, redis: Redis) -> None:
        pubsub = redis.pubsub()
        try:
            await pubsub.subscribe(self.channel)
            self.subscribed = True
            self._backoff.succeeded()
            while True:
                # Blocks on the socket: an idle replica wakes for a message, not on a timer.
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                if message is not None:
                    self.on_wake()
        finally:
            self.subscribed = False
            with contextlib.suppress(*REDIS_ERRORS):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
