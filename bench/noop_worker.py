"""A bare arq worker with one no-op job: the framework's own ceiling, with nothing of ours in it.

`python -m bench.noop_worker [--redis-url URL] [--queue NAME] [--poll-delay S] [--max-jobs N]`
Same JSON envelopes as the product (so the same producer enqueues for both), on uvloop like the
product's worker, and no log handler: arq's per-job INFO lines go nowhere, as in a quiet deployment.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from typing import Any

import uvloop
from arq.connections import RedisSettings
from arq.worker import Worker, func

NOOP_FUNCTION = "noop"


async def noop(ctx: dict[str, Any], **kwargs: Any) -> None:
    return None


def to_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.noop_worker", description=__doc__)
    env, redis_url, queue = os.environ, "ORDERWORKER_REDIS_URL", "ORDERWORKER_QUEUE_NAME"
    # By default, the server and queue a product worker takes from the same environment.
    parser.add_argument("--redis-url", default=env.get(redis_url), required=redis_url not in env)
    parser.add_argument("--queue", default=env.get(queue), required=queue not in env)
    parser.add_argument("--poll-delay", type=float, default=0.5)  # arq's own defaults
    parser.add_argument("--max-jobs", type=int, default=10)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    asyncio.set_event_loop(uvloop.new_event_loop())  # arq's Worker takes the current loop
    worker = Worker(
        functions=[func(noop, name=NOOP_FUNCTION)],
        queue_name=args.queue,
        redis_settings=RedisSettings.from_dsn(args.redis_url),
        poll_delay=args.poll_delay,
        max_jobs=args.max_jobs,
        job_serializer=to_json,
        job_deserializer=json.loads,
    )
    worker.run()  # SIGTERM: arq's own handler cancels the main task and closes the pool


if __name__ == "__main__":
    main()
