"""The product's CLI with a proposed change patched in, to measure a change before it is made.

`python -m bench.variants PATCH[,PATCH...] ARGS...` runs `orderworker ARGS...` after applying the
named patches (nothing in the product's files changes). Patches:

- `no-pre-ping` / `pre-ping`: the engine without / with `pool_pre_ping`. With asyncpg a pre-ping
  is three round trips per checkout (SQLAlchemy wraps its `;` in BEGIN ... ROLLBACK).
- `autocommit`: sessions on an AUTOCOMMIT connection, so a one-statement job sends no BEGIN and
  no COMMIT (two round trips less). Only right for single-statement work such as totals.
- `core-single`: `compute_order_total` on a SQLAlchemy Core connection (AUTOCOMMIT) with a
  one-order upsert (no CTE, no array) instead of an ORM session around UPSERT_TOTALS.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

import db.engine
from db.totals import UPSERT_ONE_TOTAL


def pre_ping(enabled: bool) -> Callable[[], None]:
    def patch() -> None:
        def create(url: str, **kwargs: Any) -> AsyncEngine:
            return create_async_engine(url, **{**kwargs, "pool_pre_ping": enabled})

        # db.engine calls the name it imported from SQLAlchemy: replace it in its namespace.
        vars(db.engine)["create_async_engine"] = create

    return patch


def autocommit() -> None:
    def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
        return async_sessionmaker(
            engine.execution_options(isolation_level="AUTOCOMMIT"), expire_on_commit=False
        )

    db.engine.create_sessionmaker = create_sessionmaker


# One order, no CTE, no array: the product's own one-order statement, on a Core connection.
ONE_ORDER_UPSERT = UPSERT_ONE_TOTAL
CENTS = Decimal("0.01")


def core_single() -> None:
    import jobs.functions
    from jobs.context import JobContext
    from jobs.errors import UnknownOrderError
    from jobs.models import ComputeOrderTotalPayload, OrderTotalResult

    async def compute_order_total(
        ctx: JobContext, payload: ComputeOrderTotalPayload
    ) -> OrderTotalResult:
        state: dict[str, Any] = ctx  # type: ignore[assignment]
        if "autocommit_engine" not in state:
            state["autocommit_engine"] = state["engine"].execution_options(
                isolation_level="AUTOCOMMIT"
            )
        async with ctx["db_slots"], state["autocommit_engine"].connect() as connection:
            found = await connection.execute(ONE_ORDER_UPSERT, {"order_id": payload.order_id})
            total = found.scalar_one_or_none()
        if total is None:
            raise UnknownOrderError(f"order {payload.order_id} does not exist")
        return OrderTotalResult(order_id=payload.order_id, total=Decimal(total).quantize(CENTS))

    # registry() reads this name when the worker is built, after the patch.
    jobs.functions.compute_order_total = compute_order_total


PATCHES: dict[str, Callable[[], None]] = {
    "no-pre-ping": pre_ping(False),
    "pre-ping": pre_ping(True),
    "autocommit": autocommit,
    "core-single": core_single,
}


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit(f"usage: python -m bench.variants PATCH[,PATCH...] ARGS... ({PATCHES})")
    names = [name for name in argv[0].split(",") if name]
    unknown = [name for name in names if name not in PATCHES]
    if unknown:
        raise SystemExit(f"unknown patches {unknown}; known: {', '.join(PATCHES)}")
    for name in names:
        PATCHES[name]()  # before worker.replica is imported: it binds these names at import
    from worker.cli import app

    app(args=argv[1:], prog_name="orderworker")


if __name__ == "__main__":
    main(sys.argv[1:])
