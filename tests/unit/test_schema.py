"""The revision the code needs, held to the migrations it ships with."""

from __future__ import annotations

import re

from alembic.script import ScriptDirectory

from db.migrate import alembic_config
from db.schema import REQUIRED_REVISION


def test_the_required_revision_is_the_newest_migration() -> None:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head == REQUIRED_REVISION  # a new migration: raise REQUIRED_REVISION with it


def test_revisions_are_numbered_so_that_they_compare_in_order() -> None:
    # db.schema and db.migrate compare revisions as strings: "0010" > "0009" only at one width.
    revisions = [
        script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()
    ]
    assert revisions and all(re.fullmatch(r"\d{4}", revision) for revision in revisions)
