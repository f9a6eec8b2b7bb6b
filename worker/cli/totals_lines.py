"""What `orderworker totals` shows a user: its progress bar, and the lines that describe a batch."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from db.batches import BatchStatus
from jobs.batches import BatchSummary


def describe_lost(batch_id: str, lost: int, example: str) -> str:
    return (
        f"batch {batch_id} cannot finish: {lost} of its chunk jobs are no longer in Redis"
        f" (expired, or lost with Redis's data), e.g. {example}; submit their orders again"
    )


def chunk_name(failure: dict[str, Any]) -> str:
    """A failed chunk as the summary names it: its job id, or its orders when it is small."""
    return str(failure.get("job_id") or "orders " + ", ".join(map(str, failure["order_ids"])))


class progress_bar:
    """A rich progress bar on stderr, advanced from batch summaries."""

    def __init__(self, requested: int) -> None:
        self.progress = Progress(
            TextColumn("totals"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("orders"),
            TimeElapsedColumn(),
            # Never Rich's default, stdout: that is the summary's alone (`--json | jq`).
            console=Console(stderr=True),
            transient=False,
        )
        self.task = self.progress.add_task("totals", total=requested)

    def __enter__(self) -> Any:
        self.progress.start()

        def update(summary: BatchSummary) -> None:
            done = summary.computed + len(summary.missing)
            self.progress.update(self.task, completed=done)

        return update

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()


def describe_batch(summary: BatchSummary) -> str:
    rate = summary.computed / summary.elapsed_s if summary.elapsed_s else 0.0
    return (
        f"batch {summary.batch_id}: {summary.requested} requested, {summary.computed} computed, "
        f"{len(summary.missing)} missing, {len(summary.failed)} failed jobs, "
        f"total_sum {summary.total_sum:.2f} in {summary.elapsed_s:.2f}s ({rate:,.0f} orders/s)"
    )


def describe_status(status: BatchStatus) -> str:
    return (
        f"batch {status.batch_id}: {status.state}, {status.requested} requested, "
        f"{status.computed} computed, {len(status.missing)} missing, "
        f"{len(status.failed)} failed jobs, total_sum {status.total_sum:.2f}"
    )


def failed_chunk(failure: dict[str, Any]) -> str:
    return f"{chunk_name(failure)}: {failure['error']['code']}: {failure['error']['message']}"
