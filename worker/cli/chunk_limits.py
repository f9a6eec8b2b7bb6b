"""A chunk job must fit under the worker's payload cap: a larger one would be refused by the
worker as undecodable, so the CLI refuses the chunk size before anything is enqueued."""

from __future__ import annotations

from collections.abc import Sequence

from jobs.client import envelope, new_batch_id
from worker.cli.exits import UsageError

BATCH_FUNCTION = "compute_batch_totals"
ENQUEUE_TIME_MS = 10**13  # as many digits as any enqueue time in ms this millennium


def envelope_overhead() -> int:
    """Bytes of a chunk job's envelope with no ids in it."""
    kwargs = {"order_ids": [], "batch_id": new_batch_id()}
    return len(envelope(BATCH_FUNCTION, kwargs, ENQUEUE_TIME_MS))


def largest_chunk_bytes(ids: Sequence[int], chunk_size: int) -> int:
    """The envelope size of the largest of the chunks `ids` splits into (JSON: `[1,22,333]`)."""
    overhead, largest = envelope_overhead(), 0
    for start in range(0, len(ids), chunk_size):
        chunk = ids[start : start + chunk_size]
        digits = sum(len(str(order_id)) for order_id in chunk)
        largest = max(largest, overhead + digits + len(chunk) - 1)
    return largest


def check_chunk_size(ids: Sequence[int], chunk_size: int, max_payload_bytes: int) -> None:
    widest = max(len(str(order_id)) for order_id in ids)
    refuse_over_cap(largest_chunk_bytes(ids, chunk_size), widest, chunk_size, max_payload_bytes)


def check_chunk_size_for_ids_up_to(
    largest_id: int, chunk_size: int, max_payload_bytes: int
) -> None:
    """For ids not read yet (`--all`): the worst case, every id as wide as the largest."""
    widest = len(str(largest_id))
    size = envelope_overhead() + chunk_size * (widest + 1) - 1
    refuse_over_cap(size, widest, chunk_size, max_payload_bytes)


def refuse_over_cap(size: int, widest: int, chunk_size: int, max_payload_bytes: int) -> None:
    if size <= max_payload_bytes:
        return
    fitting = max(1, (max_payload_bytes - envelope_overhead() + 1) // (widest + 1))
    raise UsageError(
        f"a chunk of {chunk_size} ids would be a {size:,}-byte job, over the worker's "
        f"payload cap of {max_payload_bytes:,} (ORDERWORKER_WORKER__MAX_PAYLOAD_BYTES); "
        f"use --chunk-size {fitting} or less"
    )
