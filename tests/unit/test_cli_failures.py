"""What the CLI says about a failed service: a code, one line naming the server (never its
password), an exit code; and a connection lost under WATCH counted as the outage it is."""

from __future__ import annotations

import pytest
from redis.exceptions import (
    AuthenticationError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from db.connect_errors import DatabaseLoginError
from db.schema import SchemaMissingError
from jobs.connection import redis_settings_from_url
from jobs.errors import InvalidPayloadError, UnknownCustomerError
from worker.cli.exits import CommandError
from worker.cli.failures import command_error, redis_error

REDIS = redis_settings_from_url("redis://:hunter2@cache.internal:6380/7")


@pytest.mark.parametrize(
    ("error", "code", "exit_code", "message"),
    [
        (
            RedisConnectionError(
                "Error 111 connecting to cache.internal:6380. Connection refused."
            ),
            "redis_unavailable",
            1,
            "Redis at cache.internal:6380 refused the connection",
        ),
        (
            RedisTimeoutError("Timeout connecting to server"),
            "redis_unavailable",
            1,
            "Redis at cache.internal:6380 did not answer in time",
        ),
        (
            AuthenticationError("invalid username-password pair or user is disabled."),
            "redis_auth_failed",
            1,
            "Redis at cache.internal:6380 refused the login: invalid username-password pair or"
            " user is disabled.",
        ),
        (
            ResponseError("DB index is out of range"),
            "invalid_setting",
            2,
            "ORDERWORKER_REDIS_URL names database 7, which Redis at cache.internal:6380 does not"
            " have (DB index is out of range)",
        ),
        (
            ResponseError("OOM command not allowed"),
            "redis_error",
            1,
            "Redis at cache.internal:6380 refused a command: OOM command not allowed",
        ),
    ],
)
def test_a_redis_error_names_the_server(
    error: Exception, code: str, exit_code: int, message: str
) -> None:
    described = redis_error(error, REDIS)  # type: ignore[arg-type]

    assert (described.code, described.exit_code, described.message) == (code, exit_code, message)
    assert "hunter2" not in described.message


def test_a_sentinel_url_is_named_by_its_sentinels_and_master() -> None:
    sentinels = redis_settings_from_url("redis+sentinel://:pw@s1:26379,s2:26379/orders")
    described = redis_error(RedisConnectionError("Connection refused."), sentinels)
    assert (
        described.message
        == "Redis at sentinel s1:26379,s2:26379 master=orders refused the connection"
    )


@pytest.mark.parametrize(
    ("error", "code", "exit_code"),
    [
        (InvalidPayloadError("items[0].quantity: …"), "invalid_payload", 2),
        (UnknownCustomerError("customer 9 does not exist"), "unknown_customer", 2),
        (
            DatabaseLoginError("PostgreSQL at h:5432 refused the login: …"),
            "database_auth_failed",
            1,
        ),
        (SchemaMissingError("database has no schema: run …"), "database_not_migrated", 1),
        (TimeoutError("job j did not finish within 3s"), "timeout", 1),
        (KeyError("surprise"), "internal_error", 1),
    ],
)
def test_every_error_becomes_a_code_and_an_exit_code(
    error: Exception, code: str, exit_code: int
) -> None:
    described = command_error(error)
    assert isinstance(described, CommandError)
    assert (described.code, described.exit_code) == (code, exit_code)
    assert "\n" not in described.message
