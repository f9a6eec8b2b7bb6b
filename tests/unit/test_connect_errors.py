"""Connection failures to PostgreSQL told with host and port (never the password), and libpq's
`sslmode=` in a database URL handed to asyncpg as its `ssl` connect argument."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from sqlalchemy import make_url

from db.connect_errors import (
    DatabaseConnectError,
    DatabaseLoginError,
    DatabaseUnreachableError,
    connect_error,
)
from db.engine import create_engine
from db.ssl_modes import ssl_mode
from db.urls import split_ssl_mode
from jobs.errors import error_document, is_transient

URL = make_url("postgresql+asyncpg://app:hunter2@db.internal:6543/orders")


class DriverError(Exception):
    """Stands in for asyncpg's error as the dialect raises it: a message and a SQLSTATE."""

    def __init__(self, message: str, sqlstate: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (ConnectionRefusedError(111, "Connect call failed"), "refused the connection"),
        (OSError("Multiple exceptions: [Errno 111] Connect call failed"), "refused the connection"),
        (TimeoutError(), "did not answer within 10s"),
        (socket.gaierror(-2, "Name or service not known"), "host not found"),
        (ConnectionError('server at "x" rejected SSL upgrade'), "does not accept SSL"),
    ],
)
def test_an_unreachable_server_is_named_and_worth_another_try(
    error: BaseException, message: str
) -> None:
    failure = connect_error(URL, error, 10)

    assert isinstance(failure, DatabaseUnreachableError)
    assert str(failure).startswith("PostgreSQL at db.internal:6543")
    assert message in str(failure)
    assert is_transient(failure)
    assert error_document(failure) == {"code": "database_unavailable", "message": str(failure)}


@pytest.mark.parametrize("sqlstate", ["28P01", "28000"])
def test_a_refused_login_is_final_and_never_shows_the_password(sqlstate: str) -> None:
    failure = connect_error(
        URL, DriverError('password authentication failed for "app"', sqlstate), 10
    )

    assert isinstance(failure, DatabaseLoginError)
    assert str(failure) == (
        'PostgreSQL at db.internal:6543 refused the login: password authentication failed for "app"'
    )
    assert "hunter2" not in str(failure)
    assert not is_transient(failure)
    assert error_document(failure)["code"] == "database_auth_failed"


def test_a_missing_database_is_final() -> None:
    failure = connect_error(URL, DriverError('database "orders" does not exist', "3D000"), 10)

    assert isinstance(failure, DatabaseConnectError)
    assert failure.code == "database_unavailable"
    assert not is_transient(failure)


def test_other_server_answers_keep_their_own_error() -> None:
    # "the database system is starting up": the SQLSTATE says it is worth another try.
    assert connect_error(URL, DriverError("starting up", "57P03"), 10) is None
    assert connect_error(URL, ValueError("not a connection failure"), 10) is None


def test_a_url_without_a_port_names_postgresqls_default() -> None:
    failure = connect_error(make_url("postgresql+asyncpg://app@db/orders"), TimeoutError(), 2.5)
    assert str(failure) == "PostgreSQL at db:5432 did not answer within 2.5s"


@pytest.mark.parametrize(
    "mode", ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
)
def test_libpq_sslmode_leaves_the_url_and_becomes_the_mode(mode: str) -> None:
    url, ssl_mode = split_ssl_mode(f"postgresql+asyncpg://app:pw@db/orders?sslmode={mode}&x=1")

    assert ssl_mode == mode
    assert dict(url.query) == {"x": "1"}
    assert url.password == "pw"


def test_a_url_without_sslmode_is_left_as_it_is() -> None:
    url, ssl_mode = split_ssl_mode("postgresql+asyncpg://app@db/orders?ssl=require")
    assert ssl_mode is None
    assert dict(url.query) == {"ssl": "require"}


@pytest.mark.parametrize(
    ("query", "message"),
    [("sslmode=on", "sslmode='on' is not one of"), ("ssl=require&sslmode=require", "not both")],
)
def test_an_sslmode_asyncpg_cannot_take_is_refused(query: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        split_ssl_mode(f"postgresql+asyncpg://app@db/orders?{query}")
    with pytest.raises(ValueError, match=message):  # the settings' check, without SQLAlchemy
        ssl_mode(f"postgresql+asyncpg://app@db/orders?{query}")


def test_the_settings_check_reads_the_mode_the_engine_takes() -> None:
    for url in (
        "postgresql+asyncpg://app@db/orders?x=1&sslmode=verify-ca",
        "postgresql+asyncpg://app@db/orders",
    ):
        assert ssl_mode(url) == split_ssl_mode(url)[1]


class Captured(Exception):
    """Stops the connection attempt once its arguments are seen: no server is needed."""


async def test_the_engine_hands_sslmode_to_asyncpg_as_ssl(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = create_engine("postgresql+asyncpg://app@127.0.0.1:1/orders?sslmode=require")
    seen: dict[str, Any] = {}

    def capture(*cargs: Any, **cparams: Any) -> None:
        seen.update(cparams)
        raise Captured

    monkeypatch.setattr(engine.sync_engine.dialect, "connect", capture)
    try:
        with pytest.raises(Captured):
            await engine.connect()
    finally:
        await engine.dispose()
    assert seen["ssl"] == "require"
    assert "sslmode" not in seen


def test_a_socket_url_is_named_by_its_socket_file() -> None:
    url = make_url("postgresql+asyncpg://app:hunter2@/orders?host=/var/run/postgresql")
    failure = connect_error(url, ConnectionRefusedError(111, "Connect call failed"), 10)

    assert str(failure) == "PostgreSQL at /var/run/postgresql/.s.PGSQL.5432 refused the connection"


def test_a_port_out_of_range_is_named_as_written_not_raised_over_the_real_error() -> None:
    url = make_url("postgresql+asyncpg://app@db:70000/orders")
    failure = connect_error(url, ConnectionRefusedError(111, "Connect call failed"), 10)

    assert str(failure) == "PostgreSQL at db:70000 refused the connection"
