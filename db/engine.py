"""Engine and session factory. Built by the worker's startup hook, never at import time."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)


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
    connect_args: dict[str, Any] = {
        "timeout": connect_timeout_s,
        "statement_cache_size": statement_cache_size,
        "server_settings": {"application_name": application_name},
    }
    if statement_cache_size == 0:
        # PgBouncer (transaction pooling) cannot keep named prepared statements across queries.
        connect_args["prepared_statement_name_func"] = lambda: ""
    return create_async_engine(
        url,
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


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
