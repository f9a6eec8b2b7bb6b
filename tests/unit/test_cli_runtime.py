"""The CLI's per-command set-up: settings and logging loaded once, the URLs a command needs checked
before it runs, and the settings kept out of the options Typer sees."""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import pytest
import typer

from jobs.errors import BAD_INPUT_CODES
from worker.cli.runtime import configured
from worker.settings import Settings

REDIS_URL = "redis://127.0.0.1:1/0"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[tuple[str, str]]:
    """No ORDERWORKER_* variable from the outside, no settings.toml, logging left as it is."""
    for name in list(os.environ):
        if name.startswith("ORDERWORKER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(
        "worker.cli.runtime.configure_logging", lambda level, fmt: calls.append((level, fmt))
    )
    return calls


def test_the_settings_are_not_an_option() -> None:
    @configured(database=False, redis=False)
    def command(settings: Settings, orders: int = 3) -> None:
        del settings, orders

    assert list(inspect.signature(command).parameters) == ["orders"]


def test_a_command_gets_settings_with_logging_configured(
    monkeypatch: pytest.MonkeyPatch, clean_environment: list[tuple[str, str]]
) -> None:
    monkeypatch.setenv("ORDERWORKER_REDIS_URL", REDIS_URL)
    monkeypatch.setenv("ORDERWORKER_LOG__LEVEL", "DEBUG")
    seen: list[tuple[str, int]] = []

    @configured(database=False, redis=True)
    def command(settings: Settings, orders: int) -> None:
        seen.append((settings.redis_dsn(), orders))

    command(7)
    assert seen == [(REDIS_URL, 7)]
    assert [level for level, _ in clean_environment] == ["DEBUG"]


@pytest.mark.parametrize(
    ("needs_database", "needs_redis", "missing"),
    [
        (True, False, "ORDERWORKER_DATABASE_URL"),
        (False, True, "ORDERWORKER_REDIS_URL"),
        (True, True, "ORDERWORKER_DATABASE_URL and ORDERWORKER_REDIS_URL"),
    ],
)
def test_missing_urls_stop_the_command_with_exit_2(
    capsys: pytest.CaptureFixture[str], needs_database: bool, needs_redis: bool, missing: str
) -> None:
    calls: list[Settings] = []

    @configured(database=needs_database, redis=needs_redis)
    def command(settings: Settings) -> None:
        calls.append(settings)

    with pytest.raises(typer.Exit) as stopped:
        command()
    assert stopped.value.exit_code == 2
    assert not calls
    expected = f"orderworker: invalid_setting: {missing} not set (see settings.toml or the README)"
    assert capsys.readouterr().err == expected + "\n"


def test_a_command_needing_no_url_runs_without_any() -> None:
    calls: list[Settings] = []

    @configured(database=False, redis=False)
    def command(settings: Settings) -> None:
        calls.append(settings)

    command()
    assert len(calls) == 1


def test_bad_input_codes_are_the_request_errors() -> None:
    assert {
        "invalid_payload",
        "unknown_customer",
        "unknown_item",
        "idempotency_conflict",
    } == BAD_INPUT_CODES
