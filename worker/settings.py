"""Typed settings: built-in defaults < settings.toml < ORDERWORKER_* environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings import SettingsError as PydanticSettingsError

from db.ssl_modes import ssl_mode
from jobs.connection import redis_settings_from_url
from worker.setting_sources import (
    ENV_PREFIX,
    SettingOrigin,
    read_settings_file,
    unknown_variable,
    unparsable_section,
)
from worker.setting_sources import SettingsError as SettingsError  # its home for importers

SETTINGS_FILE_VARIABLE = "ORDERWORKER_SETTINGS_FILE"
DEFAULT_SETTINGS_FILE = "settings.toml"
# The ORDERWORKER_* variables the project reads that are not settings: every other one is refused.
NOT_SETTINGS = (
    SETTINGS_FILE_VARIABLE,
    "ORDERWORKER_STATE_DIR",  # the private local stack's folder (worker/harness/servers.py)
    "ORDERWORKER_TEST_*",  # the test suite's servers (tests/conftest.py)
    "ORDERWORKER_BENCH_*",  # the benchmarks' servers (bench/stack.py)
)


def at_most(value: int | None, limit: int, limit_name: str) -> int | None:
    """A share of a resource no larger than the resource; the message names the limit."""
    if value is not None and value > limit:
        raise ValueError(f"must not exceed {limit_name} ({limit})")
    return value


class Section(BaseModel):
    # A misspelt key in settings.toml or the environment is an error, not a silent default.
    model_config = ConfigDict(extra="forbid")


class DatabasePoolSettings(Section):
    pool_size: int = Field(default=20, ge=1, le=100)
    max_overflow: int = Field(default=0, ge=0, le=100)
    pool_timeout_s: float = Field(default=10.0, gt=0)
    # PgBouncer in transaction mode cannot keep server-side prepared statements: set to 0 there.
    statement_cache_size: int = Field(default=100, ge=0)
    connect_timeout_s: float = Field(default=10.0, gt=0)
    # Connections batch sub-chunks may hold at once; the rest stay free for interactive jobs.
    # None: a tenth of the pool, at least one (a pool of one is shared). Batch statements are
    # CPU-bound in PostgreSQL: a few at once keep its cores busy, more only slow interactive jobs.
    batch_connections: int | None = Field(default=None, ge=1, le=200)

    @field_validator("batch_connections")
    @classmethod
    def _within_pool(cls, value: int | None, info: ValidationInfo) -> int | None:
        pool = info.data.get("pool_size", 1) + info.data.get("max_overflow", 0)
        return at_most(value, pool, "database.pool_size + database.max_overflow")

    def batch_connection_count(self) -> int:
        if self.batch_connections is not None:
            return self.batch_connections
        return max(1, (self.pool_size + self.max_overflow) // 10)


class WorkerTuning(Section):
    concurrency: int = Field(default=20, ge=1, le=1000)
    # The longest an idle replica waits before it looks again without a wake-up.
    poll_delay_s: float = Field(default=0.2, gt=0, le=10)
    job_timeout_s: float = Field(default=10.0, gt=0, le=600)
    max_tries: int = Field(default=5, ge=1, le=100)
    retry_base_delay_s: float = Field(default=0.5, gt=0)
    retry_max_delay_s: float = Field(default=30.0, gt=0)
    health_interval_s: float = Field(default=5.0, gt=0, le=60)
    # How long a silent replica keeps its claims: another replica then takes its jobs over.
    lease_s: float = Field(default=2.0, ge=0.1, le=60)
    shutdown_grace_s: float = Field(default=25.0, ge=0)
    keep_result_s: int = Field(default=3600, ge=1)
    max_payload_bytes: int = Field(default=1_048_576, ge=1024)
    # Where this replica serves Prometheus text at /metrics; 0 serves nothing and counts nothing.
    metrics_port: int = Field(default=9100, ge=0, le=65535)
    # Of `concurrency`, how many slots batch jobs may take at once; interactive jobs use any.
    # None: a tenth of them, at least one (with a concurrency of 1 the one slot is shared, and
    # each claim takes interactive jobs first).
    batch_slots: int | None = Field(default=None, ge=1, le=1000)

    @field_validator("batch_slots")
    @classmethod
    def _within_concurrency(cls, value: int | None, info: ValidationInfo) -> int | None:
        return at_most(value, info.data.get("concurrency", 1), "worker.concurrency")

    def batch_slot_count(self) -> int:
        if self.batch_slots is not None:
            return self.batch_slots
        return max(1, self.concurrency // 10)


class RedisTuning(Section):
    # Replicas that must acknowledge each enqueue (Redis WAIT) before a producer command counts
    # it as made: 1 keeps acknowledged jobs through a Sentinel failover; 0 does not wait.
    wait_replicas: int = Field(default=0, ge=0, le=10)
    wait_timeout_ms: int = Field(default=1000, ge=1, le=60_000)


class TotalsSettings(Section):
    chunk_size: int = Field(default=5000, ge=1, le=100_000)
    subchunk_size: int = Field(default=1000, ge=1, le=100_000)


class LogSettings(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["auto", "json", "console"] = "auto"

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
    )

    database_url: SecretStr | None = None
    redis_url: SecretStr | None = None
    queue_name: str = Field(default="arq:queue", min_length=1)
    database: DatabasePoolSettings = DatabasePoolSettings()
    redis: RedisTuning = RedisTuning()
    worker: WorkerTuning = WorkerTuning()
    totals: TotalsSettings = TotalsSettings()
    log: LogSettings = LogSettings()

    @field_validator("database_url")
    @classmethod
    def _database_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return value
        url = value.get_secret_value()
        if not url.startswith("postgresql+asyncpg://"):
            raise ValueError("must start with postgresql+asyncpg://")
        try:
            # urllib, not SQLAlchemy's make_url: commands that need no engine never import it.
            urlsplit(url).port  # noqa: B018 - parsing is the check; a bad port raises
        except ValueError:
            raise ValueError("not a valid URL (check the host and port)") from None
        ssl_mode(url)  # libpq's sslmode= is taken; a mode it does not know is refused
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        schemes = ("redis://", "rediss://", "redis+sentinel://", "unix://")
        if value is None:
            return value
        if not value.get_secret_value().startswith(schemes):
            raise ValueError("must start with one of " + ", ".join(schemes))
        try:
            redis_settings_from_url(value.get_secret_value())
        except ValueError:
            raise ValueError("not a valid URL (check the host, port and database)") from None
        return value

    def database_dsn(self) -> str:
        """The database URL, password included: for the engine only, never for display."""
        return _required(self.database_url, "ORDERWORKER_DATABASE_URL")

    def redis_dsn(self) -> str:
        """The Redis URL, password included: for the client only, never for display."""
        return _required(self.redis_url, "ORDERWORKER_REDIS_URL")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Earlier sources win: explicit arguments, then the environment, then the file.
        sources = [init_settings, env_settings, file_secret_settings]
        toml_file = settings_file()
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)


def _required(url: SecretStr | None, name: str) -> str:
    if url is None:
        raise SettingsError(f"{name} not set (see settings.toml or the README)")
    return url.get_secret_value()


def settings_file(environ: Mapping[str, str] = os.environ) -> Path | None:
    """The settings file, by the README's rule: the file ORDERWORKER_SETTINGS_FILE names (which
    must exist), otherwise settings.toml in the current directory if there is one, otherwise none.
    Absolute, so that every message about it says which file it was."""
    given = environ.get(SETTINGS_FILE_VARIABLE)
    if given is None:
        default = Path(DEFAULT_SETTINGS_FILE).absolute()
        return default if default.is_file() else None
    if not given.strip():
        raise SettingsError(f"{SETTINGS_FILE_VARIABLE} is empty: name a settings file, or unset it")
    path = Path(given).expanduser().absolute()
    if not path.exists():
        raise SettingsError(f"{SETTINGS_FILE_VARIABLE}: no such file: {path}")
    if path.is_dir():
        raise SettingsError(f"{SETTINGS_FILE_VARIABLE}: a directory, not a file: {path}")
    return path


def load_settings(**overrides: object) -> Settings:
    """Load settings; any problem is one line naming the variable, or the file and its key."""
    for name in sorted(os.environ):
        if (unknown := unknown_variable(name, Settings, NOT_SETTINGS)) is not None:
            raise SettingsError(unknown)
    path = settings_file()
    file_values = read_settings_file(path) if path is not None else {}
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        origin = SettingOrigin(Settings, overrides, os.environ, file_values, path)
        raise SettingsError(origin.describe(error.errors()[0])) from None
    except PydanticSettingsError as error:  # a section given as one variable, not valid JSON
        raise SettingsError(unparsable_section(str(error))) from None
