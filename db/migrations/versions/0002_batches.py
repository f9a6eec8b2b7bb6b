"""batches: submitted batches, their chunk jobs and the sub-chunks those computed

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    now = sa.text("now()")
    op.create_table(
        "batches",
        sa.Column("batch_id", sa.String(length=200), nullable=False),
        sa.Column(
            "submitted_at", postgresql.TIMESTAMP(timezone=True), server_default=now, nullable=False
        ),
        sa.Column("requested", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("chunks", sa.Integer(), server_default="0", nullable=False),
        sa.Column("sealed", sa.Boolean(), server_default="false", nullable=False),
        sa.Column(
            "updated_at", postgresql.TIMESTAMP(timezone=True), server_default=now, nullable=False
        ),
        sa.PrimaryKeyConstraint("batch_id", name=op.f("pk_batches")),
    )
    op.create_table(
        "batch_chunks",
        sa.Column("batch_id", sa.String(length=200), nullable=False),
        sa.Column("chunk_index", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.String(length=200), nullable=False),
        sa.Column("order_count", sa.Integer(), nullable=False),
        sa.Column("order_ids", postgresql.ARRAY(sa.BigInteger()), nullable=True),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["batches.batch_id"],
            name=op.f("fk_batch_chunks_batch_id_batches"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("batch_id", "chunk_index", name=op.f("pk_batch_chunks")),
        sa.UniqueConstraint("job_id", name=op.f("uq_batch_chunks_job_id")),
    )
    op.create_table(
        "batch_subchunks",
        sa.Column("batch_id", sa.String(length=200), nullable=False),
        sa.Column("first_id", sa.BigInteger(), nullable=False),
        sa.Column("job_id", sa.String(length=200), nullable=False),
        sa.Column("requested", sa.Integer(), nullable=False),
        sa.Column("computed", sa.Integer(), nullable=False),
        sa.Column("total_sum", sa.Numeric(precision=20, scale=2), nullable=False),
        sa.Column("missing", postgresql.ARRAY(sa.BigInteger()), nullable=False),
        sa.Column(
            "recorded_at", postgresql.TIMESTAMP(timezone=True), server_default=now, nullable=False
        ),
        sa.PrimaryKeyConstraint("batch_id", "first_id", name=op.f("pk_batch_subchunks")),
    )


def downgrade() -> None:
    op.drop_table("batch_subchunks")
    op.drop_table("batch_chunks")
    op.drop_table("batches")
