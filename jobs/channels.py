"""One pub/sub channel, listened to for as long as it is wanted, through Redis outages.

Both notices of jobs/lanes.py are heard this way: the wake-ups a replica waits for and the done
notices a waiter waits for. A lost connection loses the messages sent while it is down, so the
listener says when it is subscribed again; its users then read what they might have missed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from jobs.connection import REDIS_ERRORS

FIRST_PAUSE_S = 0.05
MAX_PAUSE_S = 1.0  # Redis down: subscribe again this often at most


def _nothing() -> None:
    return None


def _ignored(_: BaseException) -> None:
    return None


class ChannelListener:
    def __init__(
        self,
        redis: Redis,
        channel: str,
        on_message: Callable[[bytes], None],
        *,
        on_subscribed: Callable[[], None] = _nothing,
        on_lost: Callable[[BaseException], None] = _ignored,
    ) -> None:
        self.redis = redis
        self.channel = channel
        self.on_message = on_message
        self.on_subscribed = on_subscribed  # also after redis-py reconnected on its own
        self.on_lost = on_lost
        self.subscribed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._listen())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            self.subscribed.clear()

    async def _listen(self) -> None:
        pause = FIRST_PAUSE_S
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                while True:
                    # Blocks on the socket: an idle listener wakes for a message, not on a timer.
                    message = await pubsub.get_message(timeout=None)
                    if message is not None:
                        self._handle(message["type"], message["data"])
                        pause = FIRST_PAUSE_S
            except (*REDIS_ERRORS, RedisError) as error:
                self.subscribed.clear()  # messages may be lost until the subscription is back
                self.on_lost(error)
            except asyncio.CancelledError:
                with contextlib.suppress(*REDIS_ERRORS, RedisError):
                    await pubsub.unsubscribe()  # closed: the server forgets us now, not later
                raise
            finally:
                with contextlib.suppress(*REDIS_ERRORS, RedisError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(pause)
            pause = min(MAX_PAUSE_S, pause * 2)

    def _handle(self, kind: str, data: object) -> None:
        if kind == "subscribe":
            self.subscribed.set()
            self.on_subscribed()
        elif kind == "message":
            self.on_message(data if isinstance(data, bytes) else str(data).encode())
