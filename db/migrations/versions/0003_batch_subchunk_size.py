"""batches.subchunk_size: the split its first chunk job used, kept for every run of its chunks

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # NULL until a chunk of the batch first runs: batches submitted before this column work too.
    op.add_column("batches", sa.Column("subchunk_size", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("batches", "subchunk_size")
