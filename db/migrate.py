"""Apply Alembic migrations from code, so `orderworker db upgrade` needs no alembic.ini."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Any constant works: it only has to be the same for every replica running migrations at once.
MIGRATION_LOCK_ID = 0x6F72646572


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


async def upgrade_to_head(engine: AsyncEngine, revision: str = "head") -> None:
    """Idempotent, and safe when several replicas run it at the same moment. `revision`: stop
    there instead (to test an upgrade from an earlier schema)."""

    def upgrade(connection: Connection) -> None:
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
        config = alembic_config(connection)
        # A later version migrated it already (a pod of the older one restarting mid-rollout):
        # Alembic knows no such revision, and there is nothing for this version to add.
        if revision == "head" and newer_than_head(config, connection):
            return
        command.upgrade(config, revision)

    async with engine.begin() as connection:
        await connection.run_sync(upgrade)


def newer_than_head(config: Config, connection: Connection) -> bool:
    """Whether the schema is at a revision later than this code's newest migration (they are
    numbered in order: tests/unit/test_schema.py)."""
    current = MigrationContext.configure(connection).get_current_revision()
    head = ScriptDirectory.from_config(config).get_current_head()
    return current is not None and head is not None and current > head
