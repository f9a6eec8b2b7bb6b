"""arq's opening transaction of a job, answered from its claim instead of a round trip.

arq 0.28.0 `Worker.run_job` opens with one transaction on `self.pool`: GET the job, INCR its try
count and EXPIRE that key for 88400 s (and, with `allow_abort_jobs`, ZREM it from the abort set,
which the replica does not allow). The claim script does those reads and writes atomically with
the claim (lane_claims.py) and returns the job and its try, so `run_job` runs with an `Opening`
for its task: its first `self.pool.pipeline(transaction=True)` is this stand-in, which checks it
is asked exactly those commands and answers with what the claim returned. Everything after it in
`run_job` talks to Redis as before.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from arq.constants import job_key_prefix, retry_key_prefix

RETRY_KEY_EXPIRY_S = 88400  # arq's literal in run_job: the try count outlives the job by a day


class OpeningMismatch(RuntimeError):
    """arq asked its opening transaction for other commands: its run_job changed."""


@dataclass(slots=True)
class Opening:
    """What the claim read and wrote for arq's opening: the envelope (None if the job expired)
    and the try count after its INCR."""

    job_id: str
    envelope: bytes | None
    job_try: int
    asked: list[tuple[str, ...]] = field(default_factory=list)

    def expected(self) -> list[tuple[str, ...]]:
        retry_key = retry_key_prefix + self.job_id
        return [
            ("GET", job_key_prefix + self.job_id),
            ("INCR", retry_key),
            ("EXPIRE", retry_key, str(RETRY_KEY_EXPIRY_S)),
        ]


# Set by the replica's run_job for its own task; taken by the first pipeline that task asks for.
CURRENT_OPENING: ContextVar[Opening | None] = ContextVar("orderworker_opening", default=None)


class OpeningPipeline:
    """Stands in for `pool.pipeline(transaction=True)` in arq's opening: records the commands,
    and `execute` answers them from the claim."""

    def __init__(self, opening: Opening) -> None:
        self.opening = opening

    async def __aenter__(self) -> OpeningPipeline:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None

    def get(self, key: str) -> None:
        self.opening.asked.append(("GET", key))

    def incr(self, key: str) -> None:
        self.opening.asked.append(("INCR", key))

    def expire(self, key: str, seconds: int) -> None:
        self.opening.asked.append(("EXPIRE", key, str(seconds)))

    async def execute(self) -> list[Any]:
        opening = self.opening
        if opening.asked != opening.expected():
            raise OpeningMismatch(f"arq's opening asked {opening.asked}, not {opening.expected()}")
        return [opening.envelope, opening.job_try, True]


class OpeningPool:
    """What `Worker.pool` is for the one read of it that opens run_job: only `pipeline`."""

    def __init__(self, opening: Opening) -> None:
        self.opening = opening

    def pipeline(self, transaction: bool = True) -> OpeningPipeline:
        if not transaction:
            raise OpeningMismatch("arq's opening asked for a pipeline without a transaction")
        return OpeningPipeline(self.opening)


def take_opening() -> Opening | None:
    """The current task's opening, once: any later read of the pool is the real pool."""
    opening = CURRENT_OPENING.get()
    if opening is not None:
        CURRENT_OPENING.set(None)
    return opening
