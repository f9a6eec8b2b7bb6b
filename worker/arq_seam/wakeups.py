"""Wake-ups: a replica waiting for work hears of an enqueue at once instead of a poll later.

arq 0.28.0 `Worker.main` sleeps `poll_delay` between reads of the queue. A producer PUBLISHes on
`<queue>:wake` after an enqueue (jobs/lanes.py); this listener, on a pub/sub connection of its
own (jobs/channels.py), turns each message into a call of `on_wake`. The notice is optional:
without it (a plain arq producer, or this connection lost) the replica still polls every
`poll_delay_s`.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog
from redis.asyncio import Redis

from jobs.channels import ChannelListener
from jobs.lanes import wake_channel

log = structlog.get_logger("orderworker.worker")


class Wakeups:
    def __init__(self, queue_name: str, on_wake: Callable[[], None]) -> None:
        self.channel = wake_channel(queue_name)
        self.on_wake = on_wake
        self._listener: ChannelListener | None = None
        self._failures = 0

    @property
    def subscribed(self) -> bool:
        return self._listener is not None and self._listener.subscribed.is_set()

    def start(self, redis: Redis) -> None:
        if self._listener is None:
            self._listener = ChannelListener(
                redis,
                self.channel,
                lambda _: self.on_wake(),
                on_subscribed=self._resubscribed,
                on_lost=self._lost,
            )
            self._listener.start()

    async def close(self) -> None:
        if self._listener is not None:
            await self._listener.close()
            self._listener = None

    def _lost(self, error: BaseException) -> None:
        self._failures += 1
        log.warning(
            "worker.wake_unavailable",
            error=f"{type(error).__name__}: {error}",
            failures=self._failures,
        )

    def _resubscribed(self) -> None:
        if self._failures:
            log.info("worker.wake_resubscribed", after_failures=self._failures)
        self._failures = 0
