"""Slots and connections per lane: defaults that follow the totals, and a share larger than its
whole refused in one line naming the setting, however the total was set."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from tests.unit.test_settings import clean_environment
from worker.replica import OrderWorker, StartupError
from worker.settings import Settings, SettingsError, load_settings

__all__ = ["clean_environment"]  # autouse: no ORDERWORKER_* variable from outside


@pytest.mark.parametrize(("concurrency", "batch_slots"), [(1, 1), (2, 1), (20, 2), (100, 10)])
def test_batch_slots_default_to_a_tenth_and_never_to_none(
    concurrency: int, batch_slots: int
) -> None:
    settings = load_settings(worker={"concurrency": concurrency})
    assert settings.worker.batch_slot_count() == batch_slots


@pytest.mark.parametrize(
    ("pool", "overflow", "batch"), [(1, 0, 1), (5, 0, 1), (20, 0, 2), (20, 10, 3)]
)
def test_batch_connections_default_to_a_tenth_of_the_pool(
    pool: int, overflow: int, batch: int
) -> None:
    settings = load_settings(database={"pool_size": pool, "max_overflow": overflow})
    assert settings.database.batch_connection_count() == batch


def test_explicit_shares_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERWORKER_WORKER__CONCURRENCY", "4")
    monkeypatch.setenv("ORDERWORKER_WORKER__BATCH_SLOTS", "4")  # batch jobs may fill every slot
    monkeypatch.setenv("ORDERWORKER_DATABASE__BATCH_CONNECTIONS", "7")
    settings = load_settings()
    assert settings.worker.batch_slot_count() == 4
    assert settings.database.batch_connection_count() == 7


TOO_LARGE = {
    "slots": (
        {"ORDERWORKER_WORKER__CONCURRENCY": "2", "ORDERWORKER_WORKER__BATCH_SLOTS": "3"},
        "invalid setting ORDERWORKER_WORKER__BATCH_SLOTS:",
        "must not exceed worker.concurrency (2)",
    ),
    "connections": (
        {"ORDERWORKER_DATABASE__POOL_SIZE": "4", "ORDERWORKER_DATABASE__BATCH_CONNECTIONS": "5"},
        "invalid setting ORDERWORKER_DATABASE__BATCH_CONNECTIONS:",
        "must not exceed database.pool_size + database.max_overflow (4)",
    ),
}


@pytest.mark.parametrize(("env", "start", "reason"), TOO_LARGE.values(), ids=TOO_LARGE.keys())
def test_a_share_larger_than_its_whole_is_one_line_naming_the_setting(
    env: dict[str, str], start: str, reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(start)
    assert reason in message


async def test_a_concurrency_lowered_after_loading_is_checked_when_the_replica_starts() -> None:
    # Async: arq's Worker takes the running loop (a sync test would leave a new one unclosed).
    # `orderworker worker --concurrency N` replaces the concurrency of validated settings.
    settings = Settings(
        database_url=SecretStr("postgresql+asyncpg://db.example/orders"),
        redis_url=SecretStr("redis://redis.example:6379/0"),
        worker={"batch_slots": 8},  # type: ignore[arg-type]
    )
    lowered = settings.model_copy(
        update={"worker": settings.worker.model_copy(update={"concurrency": 4})}
    )
    with pytest.raises(StartupError, match=r"^invalid setting ORDERWORKER_WORKER__BATCH_SLOTS: "):
        OrderWorker(lowered, max_jobs=4)
    assert OrderWorker(settings, max_jobs=20).intake.batch_slots == 8
