"""Settings sources (defaults < settings.toml < environment) and one-line errors that name the
setting without echoing secrets."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from pydantic import SecretStr

from worker.setting_sources import unknown_variable
from worker.settings import (
    NOT_SETTINGS,
    SETTINGS_FILE_VARIABLE,
    Settings,
    SettingsError,
    load_settings,
)
from worker.settings import settings_file as found_settings_file

DATABASE_URL = "postgresql+asyncpg://app:db-hunter2@db.example:5432/orders"
REDIS_URL = "redis://:redis-hunter2@redis.example:6379/0"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No ORDERWORKER_* variable from the outside, and no settings.toml in the working folder."""
    for name in list(os.environ):
        if name.startswith("ORDERWORKER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def settings_file(monkeypatch: pytest.MonkeyPatch, folder: Path, text: str) -> Path:
    path = folder / "custom-settings.toml"
    path.write_text(text)
    monkeypatch.setenv(SETTINGS_FILE_VARIABLE, str(path))
    return path


def settings_error(monkeypatch: pytest.MonkeyPatch, **variables: str) -> str:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_defaults_need_no_file_and_no_environment() -> None:
    settings = load_settings()
    assert settings.database_url is None
    assert settings.redis_url is None
    assert settings.queue_name == "arq:queue"
    assert settings.worker.concurrency == 20
    assert settings.worker.max_tries == 5
    assert settings.totals.chunk_size == 5000
    assert (settings.log.level, settings.log.format) == ("INFO", "auto")


def test_settings_toml_in_the_working_folder_is_read(tmp_path: Path) -> None:
    (tmp_path / "settings.toml").write_text('queue_name = "orders"\n[worker]\nconcurrency = 4\n')
    settings = load_settings()
    assert (settings.queue_name, settings.worker.concurrency) == ("orders", 4)


def test_the_settings_file_variable_names_another_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "settings.toml").write_text('queue_name = "ignored"\n')
    settings_file(monkeypatch, tmp_path, 'queue_name = "from-file"\n[totals]\nchunk_size = 10\n')
    settings = load_settings()
    assert (settings.queue_name, settings.totals.chunk_size) == ("from-file", 10)


def test_the_environment_overrides_the_file_key_by_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings_file(
        monkeypatch,
        tmp_path,
        'queue_name = "from-file"\n[worker]\nconcurrency = 7\nmax_tries = 3\n',
    )
    monkeypatch.setenv("ORDERWORKER_WORKER__CONCURRENCY", "9")
    monkeypatch.setenv("ORDERWORKER_QUEUE_NAME", "from-env")
    monkeypatch.setenv("ORDERWORKER_LOG__LEVEL", "debug")
    settings = load_settings()
    assert settings.worker.concurrency == 9
    assert settings.worker.max_tries == 3  # the file's value survives beside the env's
    assert settings.queue_name == "from-env"
    assert settings.log.level == "DEBUG"


def test_explicit_arguments_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERWORKER_QUEUE_NAME", "from-env")
    assert load_settings(queue_name="explicit").queue_name == "explicit"


def test_urls_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERWORKER_DATABASE_URL", DATABASE_URL)
    monkeypatch.setenv("ORDERWORKER_REDIS_URL", REDIS_URL)
    settings = load_settings()
    assert settings.database_url is not None
    assert settings.database_url.get_secret_value() == DATABASE_URL
    assert settings.redis_url is not None
    assert settings.redis_url.get_secret_value() == REDIS_URL


@pytest.mark.parametrize("value", ["abc", "0", "1001", "2.5", ""])
def test_a_bad_nested_value_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    message = settings_error(monkeypatch, ORDERWORKER_WORKER__CONCURRENCY=value)
    assert message.startswith("invalid setting ORDERWORKER_WORKER__CONCURRENCY: ")


def test_a_bad_value_in_the_file_names_the_key_and_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = settings_file(monkeypatch, tmp_path, '[log]\nlevel = "LOUD"\n')
    message = settings_error(monkeypatch)
    assert message.startswith(f"invalid setting log.level in {path}: ")
    assert "LOUD" in message
    assert "ORDERWORKER_" not in message


def test_a_bad_value_in_the_working_folders_file_names_that_file(tmp_path: Path) -> None:
    (tmp_path / "settings.toml").write_text("[worker]\nconcurrency = 0\n")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert str(caught.value) == (
        f"invalid setting worker.concurrency in {tmp_path / 'settings.toml'}: "
        "Input should be greater than or equal to 1 (got 0)"
    )


def test_a_value_the_environment_overrides_is_named_by_its_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings_file(monkeypatch, tmp_path, "[worker]\nconcurrency = 4\n")
    message = settings_error(monkeypatch, ORDERWORKER_WORKER__CONCURRENCY="0")
    assert message.startswith("invalid setting ORDERWORKER_WORKER__CONCURRENCY: "), message


def test_a_share_too_large_for_its_whole_from_the_file_names_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = settings_file(monkeypatch, tmp_path, "[worker]\nbatch_slots = 5\n")
    message = settings_error(monkeypatch, ORDERWORKER_WORKER__CONCURRENCY="2")
    assert message == (
        f"invalid setting worker.batch_slots in {path}: "
        "must not exceed worker.concurrency (2) (got 5)"
    )


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[wokrer]\nconcurrency = 4\n", "wokrer (did you mean worker?)"),
        ("[worker]\nconcurency = 4\n", "worker.concurency (did you mean worker.concurrency?)"),
        ("[worker]\nxyzzy = 4\n", "worker.xyzzy"),
    ],
)
def test_an_unknown_key_in_the_file_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str, named: str
) -> None:
    path = settings_file(monkeypatch, tmp_path, text)
    key, _, hint = named.partition(" ")
    assert settings_error(monkeypatch) == f"unknown setting {key} in {path}{' ' * bool(hint)}{hint}"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app:db-hunter2@db.example/orders",
        "postgres://app:db-hunter2@db.example/orders",
        "mysql+aiomysql://app:db-hunter2@db.example/orders",
    ],
)
def test_a_database_url_of_the_wrong_scheme_is_named_not_echoed(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    message = settings_error(monkeypatch, ORDERWORKER_DATABASE_URL=url)
    assert "ORDERWORKER_DATABASE_URL" in message
    assert "postgresql+asyncpg://" in message
    assert "hunter2" not in message
    assert "db.example" not in message


def test_a_redis_url_of_the_wrong_scheme_is_named_not_echoed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = settings_error(monkeypatch, ORDERWORKER_REDIS_URL="http://:redis-hunter2@cache")
    assert "ORDERWORKER_REDIS_URL" in message
    assert "hunter2" not in message


@pytest.mark.parametrize(
    "url",
    ["redis://h:6379/0", "rediss://h:6380/1", "unix:///run/redis.sock", "redis+sentinel://s/m"],
)
def test_every_supported_redis_scheme_is_accepted(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("ORDERWORKER_REDIS_URL", url)
    settings = load_settings()
    assert settings.redis_url is not None
    assert settings.redis_url.get_secret_value() == url


def test_a_missing_settings_file_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere" / "settings.toml"
    message = settings_error(monkeypatch, **{SETTINGS_FILE_VARIABLE: str(missing)})
    assert message == f"{SETTINGS_FILE_VARIABLE}: no such file: {missing}"


def test_a_malformed_settings_file_is_a_one_line_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = settings_file(monkeypatch, tmp_path, 'queue_name = "q"\n[worker\nconcurrency = 3\n')
    message = settings_error(monkeypatch)
    assert message.startswith(f"invalid settings file {path}: ")
    assert "line 2" in message


def test_a_settings_file_that_is_not_utf8_is_a_one_line_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('queue_name = "caf\u00e9"\n'.encode("latin-1"))
    message = settings_error(monkeypatch, **{SETTINGS_FILE_VARIABLE: str(path)})
    assert message.startswith(f"invalid settings file {path}: not UTF-8"), message


def test_a_relative_settings_file_is_found_from_the_working_folder_and_named_in_full(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "prod.toml").write_text('queue_name = "prod"\n')
    monkeypatch.setenv(SETTINGS_FILE_VARIABLE, "conf/prod.toml")
    assert load_settings().queue_name == "prod"
    message = settings_error(monkeypatch, **{SETTINGS_FILE_VARIABLE: "conf/missing.toml"})
    assert (
        message == f"{SETTINGS_FILE_VARIABLE}: no such file: {tmp_path / 'conf' / 'missing.toml'}"
    )


@pytest.mark.parametrize(("value", "reason"), [("", "is empty"), (".", "a directory")])
def test_a_settings_file_variable_naming_no_file_is_an_error(
    monkeypatch: pytest.MonkeyPatch, value: str, reason: str
) -> None:
    assert reason in settings_error(monkeypatch, **{SETTINGS_FILE_VARIABLE: value})


def test_without_the_variable_a_settings_file_elsewhere_is_not_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "settings.toml").write_text('queue_name = "here"\n')
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert found_settings_file() is None
    assert load_settings().queue_name == "arq:queue"
    monkeypatch.chdir(tmp_path)
    assert found_settings_file() == tmp_path / "settings.toml"


def test_secret_urls_never_appear_in_repr_or_str(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERWORKER_DATABASE_URL", DATABASE_URL)
    monkeypatch.setenv("ORDERWORKER_REDIS_URL", REDIS_URL)
    settings = load_settings()
    for shown in (repr(settings), str(settings), settings.model_dump_json()):
        assert "hunter2" not in shown
        assert "db.example" not in shown
    assert isinstance(settings.database_url, SecretStr)


def test_settings_built_directly_validate_the_same_way() -> None:
    with pytest.raises(ValueError, match=r"postgresql\+asyncpg://"):
        Settings(database_url=SecretStr("sqlite:///orders.db"))


def test_a_misspelt_nested_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    message = settings_error(monkeypatch, ORDERWORKER_WORKER__CONCURENCY="50")
    assert message == (
        "unknown setting ORDERWORKER_WORKER__CONCURENCY"
        " (did you mean ORDERWORKER_WORKER__CONCURRENCY?)"
    )


@pytest.mark.parametrize(
    ("variable", "hint"),
    [
        ("ORDERWORKER_CONCURRENCY", "ORDERWORKER_WORKER__CONCURRENCY"),
        ("ORDERWORKER_QUEUE", "ORDERWORKER_QUEUE_NAME"),
        ("ORDERWORKER_LOG__LEVEL__X", "ORDERWORKER_LOG__LEVEL"),
        ("ORDERWORKER_XYZZY", None),
        ("orderworker_worker__concurency", "ORDERWORKER_WORKER__CONCURRENCY"),
    ],
)
def test_an_unknown_variable_is_refused_with_the_nearest_setting(
    monkeypatch: pytest.MonkeyPatch, variable: str, hint: str | None
) -> None:
    message = settings_error(monkeypatch, **{variable: "5"})
    suffix = f" (did you mean {hint}?)" if hint else ""
    assert message == f"unknown setting {variable}{suffix}"


OWN_VARIABLES = {
    "ORDERWORKER_TEST_DATABASE_URL": "postgresql+asyncpg://db.example/tests",
    "ORDERWORKER_TEST_ANYTHING": "x",
    "ORDERWORKER_BENCH_REDIS_URL": "redis://redis.example:6379/3",
    "ORDERWORKER_STATE_DIR": "/tmp/stack",
}


def test_the_projects_own_variables_are_not_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in OWN_VARIABLES.items():
        monkeypatch.setenv(name, value)
    assert load_settings().redis_url is None


@pytest.mark.parametrize(
    ("variable", "value"),
    [("ORDERWORKER_WORKER", '{"concurrency": 3}'), ("orderworker_worker__concurrency", "3")],
)
def test_a_section_or_a_key_in_any_case_is_a_setting(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    assert load_settings().worker.concurrency == 3


def test_a_section_variable_that_is_not_json_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    message = settings_error(monkeypatch, ORDERWORKER_WORKER="fast")
    assert message.startswith("invalid setting ORDERWORKER_WORKER: not a JSON object"), message


REPO = Path(__file__).resolve().parents[2]
# Where the project sets or reads ORDERWORKER_* variables (the docs and tests also name mistakes).
READERS = ["worker", "jobs", "bench", "db", ".ci", "Dockerfile", "docker-compose.yml"]


def test_every_variable_the_project_reads_is_a_setting_or_listed_as_not_one() -> None:
    texts = [
        path.read_text()
        for reader in READERS
        for path in ([REPO / reader] if (REPO / reader).is_file() else (REPO / reader).rglob("*"))
        if path.is_file() and path.suffix in {"", ".py", ".yml", ".toml"}
    ]
    texts += [path.read_text() for path in (REPO / "tests").rglob("conftest.py")]
    names = {name for text in texts for name in re.findall(r"ORDERWORKER_[A-Z][A-Z0-9_]*", text)}
    assert "ORDERWORKER_TEST_DATABASE_URL" in names and "ORDERWORKER_STATE_DIR" in names
    refused = {name: unknown_variable(name, Settings, NOT_SETTINGS) for name in names}
    assert {name: line for name, line in refused.items() if line} == {}


@pytest.mark.parametrize(
    ("variable", "url"),
    [
        ("ORDERWORKER_DATABASE_URL", "postgresql+asyncpg://u:hunter2@db.example:notaport/x"),
        ("ORDERWORKER_REDIS_URL", "redis://:hunter2@redis.example:notaport/0"),
        ("ORDERWORKER_REDIS_URL", "redis+sentinel://:hunter2@h1:x/master"),
    ],
)
def test_an_unparseable_url_is_named_not_echoed(
    monkeypatch: pytest.MonkeyPatch, variable: str, url: str
) -> None:
    message = settings_error(monkeypatch, **{variable: url})
    assert variable in message
    assert "not a valid URL" in message
    assert "hunter2" not in message


def test_the_lease_is_three_seconds_by_default_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().worker.lease_s == 2.0
    monkeypatch.setenv("ORDERWORKER_WORKER__LEASE_S", "0.5")
    assert load_settings().worker.lease_s == 0.5
    for value in ("0", "0.05", "61", "soon"):
        message = settings_error(monkeypatch, ORDERWORKER_WORKER__LEASE_S=value)
        assert message.startswith("invalid setting ORDERWORKER_WORKER__LEASE_S: "), message
