"""Slots and connections per lane: defaults that follow the totals, and a share larger than its
whole refused in one line naming the setting, however the total was set."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import SecretStr

from worker.replica import OrderWorker, StartupError
from worker.settings import Settings, SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("ORDERWORKER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


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


def test_more_batch_slots_than_slots_is_one_line_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ORDERWORKER_WORKER__CONCURRENCY", "2")
    monkeypatch.setenv("ORDERWORKER_WORKER__BATCH_SLOTS", "3")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("invalid setting ORDERWORKER_WORKER__BATCH_SLOTS:")
    assert "must not exceed worker.concurrency (2)" in message


def test_more_batch_connections_than_the_pool_is_one_line_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ORDERWORKER_DATABASE__POOL_SIZE", "4")
    monkeypatch.setenv("ORDERWORKER_DATABASE__BATCH_CONNECTIONS", "5")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert str(caught.value).startswith("invalid setting ORDERWORKER_DATABASE__BATCH_CONNECTIONS:")
    assert "(4)" in str(caught.value)


def test_a_concurrency_lowered_after_loading_is_checked_when_the_replica_starts() -> None:
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
