"""A SAQ worker running the product's per-order job, the peer `--peers` compares orderworker with.

`python -m bench.saq_worker` (servers and queue from ORDERWORKER_DATABASE_URL, ORDERWORKER_REDIS_URL
and ORDERWORKER_QUEUE_NAME, as a replica takes them). One SAQ Redis queue, concurrency 20, uvloop;
the job opens an AsyncSession from the product's engine factory and runs the product's own
statement the way the product's job does (`upsert_order_total_direct`, one autocommit statement),
so the two systems differ in their queues only.
"""

from __future__ import annotations

import os
from typing import Any

import uvloop
from saq import Worker
from saq.queue.redis import RedisQueue
from saq.types import Context
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from db.engine import create_engine, create_sessionmaker
from db.totals import upsert_order_total_direct

SAQ_FUNCTION = "compute_order_total"
CONCURRENCY = 20  # the product's default concurrency and pool size


class SaqContext(Context, total=False):
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]


def saq_queue(redis_url: str, queue_name: str) -> RedisQueue:
    return RedisQueue.from_url(redis_url, name=queue_name)


async def compute_order_total(ctx: SaqContext, *, order_id: int) -> dict[str, Any]:
    async with ctx["sessions"]() as session:
        total = await upsert_order_total_direct(session, order_id)
    if total is None:
        raise ValueError(f"order {order_id} does not exist")
    return {"order_id": order_id, "total": str(total)}


async def startup(ctx: SaqContext) -> None:
    engine = create_engine(os.environ["ORDERWORKER_DATABASE_URL"], pool_size=CONCURRENCY)
    ctx["engine"] = engine
    ctx["sessions"] = create_sessionmaker(engine.execution_options(isolation_level="AUTOCOMMIT"))


async def shutdown(ctx: SaqContext) -> None:
    await ctx["engine"].dispose()


async def serve() -> None:
    queue = saq_queue(os.environ["ORDERWORKER_REDIS_URL"], os.environ["ORDERWORKER_QUEUE_NAME"])
    worker = Worker(
        queue,
        functions=[(SAQ_FUNCTION, compute_order_total)],
        concurrency=CONCURRENCY,
        startup=startup,
        shutdown=shutdown,
    )
    try:
        await queue.connect()
        await worker.start()  # until SIGTERM
    finally:
        await queue.disconnect()


def main() -> None:
    uvloop.run(serve())


if __name__ == "__main__":
    main()
