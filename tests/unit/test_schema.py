"""The revision the code needs, held to the migrations it ships with."""

from __future__ import annotations

from alembic.script import ScriptDirectory

from db.migrate import alembic_config
from db.schema import REQUIRED_REVISION


def test_the_required_revision_is_the_newest_migration() -> None:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head == REQUIRED_REVISION  # a new migration: raise REQUIRED_REVISION with it
