"""The stand-in for arq's opening transaction answers only the commands arq 0.28.0 sends."""

from __future__ import annotations

import pytest
from arq.constants import job_key_prefix, retry_key_prefix

from worker.arq_seam.openings import (
    CURRENT_OPENING,
    Opening,
    OpeningMismatch,
    OpeningPool,
    take_opening,
)


async def test_answers_arqs_three_commands_from_the_claim() -> None:
    pool = OpeningPool(Opening("j", b"{}", 2))
    async with pool.pipeline(transaction=True) as pipe:
        pipe.get(job_key_prefix + "j")
        pipe.incr(retry_key_prefix + "j")
        pipe.expire(retry_key_prefix + "j", 88400)
        assert await pipe.execute() == [b"{}", 2, True]


async def test_other_commands_mean_arq_changed_and_are_refused() -> None:
    pool = OpeningPool(Opening("j", b"{}", 1))
    async with pool.pipeline(transaction=True) as pipe:
        pipe.get(job_key_prefix + "j")
        pipe.incr(retry_key_prefix + "j")
        with pytest.raises(OpeningMismatch, match="arq's opening asked"):
            await pipe.execute()
    with pytest.raises(OpeningMismatch):
        pool.pipeline(transaction=False)


def test_an_opening_is_taken_once() -> None:
    CURRENT_OPENING.set(Opening("j", None, 1))
    first = take_opening()
    assert first is not None and first.job_id == "j"
    assert take_opening() is None
