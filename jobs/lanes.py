"""Lanes and notices: the Redis names that producers, replicas and waiters agree on.

Interactive jobs (an upstream service waits on them) and batch chunks share one queue name but
not one sorted set, so a checkout never waits behind thousands of chunks:

- `<queue>`: arq's own queue, the interactive lane. Any arq producer writes here; a batch job
  written here is moved to the batch lane by the replica that first reads it.
- `<queue>:batch`: the batch lane, an arq queue like the other (same job, result, retry and
  in-progress keys). `OrderClient` enqueues batch jobs here directly.

Two pub/sub channels replace polling on both sides; both are optional, so losing a notice costs
only a fallback bound:

- `<queue>:wake`: published after an enqueue; a replica waiting for work takes it at once.
- `<queue>:done`: a finished job's id, published when its result is stored; waiters read it.
"""

from __future__ import annotations

from typing import Literal

Lane = Literal["interactive", "batch"]

# Jobs that are batch work; every other job (and any unknown one) is interactive.
BATCH_FUNCTIONS = frozenset({"compute_batch_totals"})


def lane_of(function: str) -> Lane:
    return "batch" if function in BATCH_FUNCTIONS else "interactive"


def lane_queue(queue_name: str, lane: Lane) -> str:
    return f"{queue_name}:batch" if lane == "batch" else queue_name


def wake_channel(queue_name: str) -> str:
    return f"{queue_name}:wake"


def done_channel(queue_name: str) -> str:
    return f"{queue_name}:done"
