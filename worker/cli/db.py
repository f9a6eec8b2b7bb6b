"""`orderworker db`: schema migrations and sample data."""

from __future__ import annotations

from typing import Annotated

import typer

from db import seed as sample
from db.engine import create_sessionmaker
from db.schema import current_revision
from worker.cli.exits import reports_errors
from worker.cli.resources import database
from worker.cli.runtime import configured, run_async
from worker.settings import Settings

db_app = typer.Typer(help="Database schema and sample data.", no_args_is_help=True)


@db_app.command("upgrade")
@reports_errors
@configured(database=True, redis=False)
def db_upgrade(settings: Settings) -> None:
    """Apply migrations (idempotent; safe to run from several replicas at once)."""
    revision = run_async(upgrade(settings))
    typer.echo(f"database at revision {revision}")


@db_app.command("seed")
@reports_errors
@configured(database=True, redis=False)
def db_seed(
    settings: Settings,
    orders: Annotated[int, typer.Option(min=0, help="Generated orders to add.")] = 0,
) -> None:
    """Load the seed service's sample data (orders 1-3), plus N generated orders."""
    total = run_async(seed(settings, orders))
    typer.echo(f"sample data loaded; {orders} orders generated; {total} orders in all")


async def upgrade(settings: Settings) -> str | None:
    from db.migrate import upgrade_to_head  # Alembic is heavy to import: only for this command

    async with database(settings, migrated=False) as engine:
        await upgrade_to_head(engine)
        return await current_revision(engine)


async def seed(settings: Settings, generated_orders: int) -> int:
    async with database(settings) as engine:
        async with create_sessionmaker(engine).begin() as session:
            await sample.load_sample(session)
            await sample.generate_orders(session, generated_orders)
        async with create_sessionmaker(engine)() as session:
            return await sample.count_orders(session)
