"""Engine and session factory. Built by the worker's startup hook, never at import time."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from db.connect_errors import connect_error
from db.urls import split_ssl_mode


def create_engine(
    url: str,
    *,
    pool_size: int = 5,
    max_overflow: int = 0,
    pool_timeout_s: float = 10.0,
    statement_cache_size: int = 100,
    connect_timeout_s: float = 10.0,
    application_name: str = "orderworker",
) -> AsyncEngine:
    engine_url, ssl_mode = split_ssl_mode(url)
    connect_args: dict[str, Any] = {
        "timeout": connect_timeout_s,
        "statement_cache_size": statement_cache_size,
        "server_settings": {"application_name": application_name},
    }
    if statement_cache_size == 0:
        # PgBouncer (transaction pooling) cannot keep named prepared statements across queries.
        connect_args["prepared_statement_name_func"] = lambda: ""
    if ssl_mode is not None:
        connect_args["ssl"] = ssl_mode
    engine = create_async_engine(
        engine_url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout_s,
        # No pre-ping: it costs a round trip per job. A connection that died with its server
        # fails its statement instead, is invalidated, and the job is retried (a transient fault).
        pool_pre_ping=False,
        # Errors and logs never carry statement parameters (order ids, payload values).
        hide_parameters=True,
        connect_args=connect_args,
    )

    @event.listens_for(engine.sync_engine, "do_connect")
    def _connect(dialect: Dialect, record: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
        # A failed connection names the server it tried: host and port, never the password.
        try:
            return dialect.connect(*cargs, **cparams)
        except Exception as error:
            failure = connect_error(engine_url, error, connect_timeout_s)
            if failure is None:
                raise
            raise failure from error

    return engine


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
