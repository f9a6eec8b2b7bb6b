"""Readiness, without servers: the URL asyncpg is given, what a check names, and a refused
connection reported in one line naming the service, host and port."""

from __future__ import annotations

import socket

import pytest

from worker.harness.servers import free_port as closed_port  # nothing listens there
from worker.readiness import asyncpg_dsn, check_postgresql, check_redis, postgresql_where


@pytest.mark.parametrize(
    ("url", "dsn"),
    [
        ("postgresql+asyncpg://u:p%40ss@db:6432/orders", "postgresql://u:p%40ss@db:6432/orders"),
        (
            "postgresql+asyncpg://u@db/orders?ssl=require",
            "postgresql://u@db/orders?sslmode=require",
        ),
        (
            "postgresql+asyncpg://u@db/orders?prepared_statement_cache_size=0&sslmode=verify-full",
            "postgresql://u@db/orders?sslmode=verify-full",
        ),
    ],
    ids=["password-kept-encoded", "ssl-is-sslmode", "sqlalchemy-options-dropped"],
)
def test_the_url_given_to_asyncpg(url: str, dsn: str) -> None:
    assert asyncpg_dsn(url) == dsn


def test_a_check_names_the_host_port_and_database_never_the_password() -> None:
    where = postgresql_where("postgresql+asyncpg://u:hunter2@db.example/orders")
    assert where == "postgresql db.example:5432/orders"


async def test_a_refused_postgresql_is_one_line_naming_it() -> None:
    port = closed_port()
    check = await check_postgresql(f"postgresql+asyncpg://u:hunter2@127.0.0.1:{port}/x", 2)
    assert not check.ok
    assert check.where == f"postgresql 127.0.0.1:{port}/x"
    assert check.error is not None and "\n" not in check.error
    assert "hunter2" not in check.error


async def test_a_refused_redis_is_one_line_naming_it() -> None:
    port = closed_port()
    check = await check_redis(f"redis://:hunter2@127.0.0.1:{port}/3", 2)
    assert not check.ok
    assert check.where == f"redis 127.0.0.1:{port} db=3 ssl=False"
    assert check.error is not None and check.error.startswith("ConnectionError")
    assert "hunter2" not in check.error


async def test_a_server_that_never_answers_is_a_timeout() -> None:
    with socket.socket() as silent:  # accepts connections (backlog) and never speaks
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        check = await check_postgresql(f"postgresql+asyncpg://u@127.0.0.1:{port}/x", 0.3)
    assert check.error == "no answer within 0.3 s"


@pytest.mark.parametrize(
    ("url", "where"),
    [
        (
            "postgresql+asyncpg://u@/orders?host=/var/run/postgresql",
            "/var/run/postgresql/.s.PGSQL.5432",
        ),
        ("postgresql+asyncpg://u@/orders?host=/tmp&port=6432", "/tmp/.s.PGSQL.6432"),
        ("postgresql+asyncpg://u@db:6432/orders", "db:6432"),
    ],
)
def test_a_socket_url_is_named_by_its_socket_file(url: str, where: str) -> None:
    assert postgresql_where(url) == f"postgresql {where}/orders"
