"""ORM models. Table and column names are the seed service's: other services read them."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY, TIMESTAMP
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Money = Numeric(10, 2, asdecimal=True)
Timestamp = TIMESTAMP(timezone=True)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Address(Base):
    __tablename__ = "address"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    flat_number: Mapped[int] = mapped_column(Integer)
    # Text, not a number: leading zeros in post codes matter.
    post_code: Mapped[str] = mapped_column(String(16))


class Customer(Base):
    __tablename__ = "customer"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    address_id: Mapped[int] = mapped_column(ForeignKey("address.id"), index=True)

    address: Mapped[Address] = relationship(lazy="raise")


class Item(Base):
    __tablename__ = "item"
    __table_args__ = (CheckConstraint("price >= 0", name="price_not_negative"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    price: Mapped[Decimal] = mapped_column(Money)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)


class Order(Base):
    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id"), index=True)
    order_time: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True, nullable=True)
    # The queue job that placed the order: a job run twice (at-least-once delivery) finds it.
    job_id: Mapped[str | None] = mapped_column(String(200), unique=True, nullable=True)

    customer: Mapped[Customer] = relationship(lazy="raise")
    order_items: Mapped[list[OrderItem]] = relationship(lazy="raise", back_populates="order")


class OrderItem(Base):
    __tablename__ = "order_items"
    __table_args__ = (CheckConstraint("quantity > 0", name="quantity_positive"),)

    order_id: Mapped[int] = mapped_column(
        ForeignKey("orders.id", ondelete="CASCADE"), primary_key=True
    )
    item_id: Mapped[int] = mapped_column(ForeignKey("item.id"), primary_key=True, index=True)
    quantity: Mapped[int] = mapped_column(Integer)

    order: Mapped[Order] = relationship(lazy="raise", back_populates="order_items")
    item: Mapped[Item] = relationship(lazy="raise")


class OrderTotal(Base):
    __tablename__ = "order_totals"

    order_id: Mapped[int] = mapped_column(
        ForeignKey("orders.id", ondelete="CASCADE"), primary_key=True
    )
    total: Mapped[Decimal] = mapped_column(Numeric(12, 2, asdecimal=True))
    computed_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())


class FailedJob(Base):
    """Dead letters: every job that ended in failure, with enough to understand and replay it."""

    __tablename__ = "failed_jobs"
    __table_args__ = (Index("ix_failed_jobs_last_failed_at", "last_failed_at"),)

    job_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    function: Mapped[str] = mapped_column(String(200))
    queue_name: Mapped[str] = mapped_column(String(200))
    # Payload as JSON text (cut to a size cap); NULL when the bytes were not decodable text.
    payload: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_code: Mapped[str] = mapped_column(String(100))
    error_message: Mapped[str] = mapped_column(Text)
    tries: Mapped[int] = mapped_column(Integer)
    first_failed_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    last_failed_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())


class Batch(Base):
    """A batch of totals as submitted: its figures are sums over its sub-chunks' rows."""

    __tablename__ = "batches"

    batch_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    submitted_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    # Order ids and chunk jobs submitted so far; final once `sealed` (the submission ended).
    requested: Mapped[int] = mapped_column(BigInteger, server_default="0")
    chunks: Mapped[int] = mapped_column(Integer, server_default="0")
    sealed: Mapped[bool] = mapped_column(Boolean, server_default="false")
    updated_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    # The sub-chunk size of the first chunk job to run, which every run of its chunks splits by:
    # sub-chunks are recorded by their smallest id, and another split would count ids twice.
    subchunk_size: Mapped[int | None] = mapped_column(Integer, nullable=True)


class BatchChunk(Base):
    """One chunk job of a batch, registered before it is enqueued."""

    __tablename__ = "batch_chunks"

    batch_id: Mapped[str] = mapped_column(
        ForeignKey("batches.batch_id", ondelete="CASCADE"), primary_key=True
    )
    chunk_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(String(200), unique=True)
    order_count: Mapped[int] = mapped_column(Integer)
    # The ids of a small chunk, to name them if it fails; NULL for larger ones.
    order_ids: Mapped[list[int] | None] = mapped_column(ARRAY(BigInteger), nullable=True)


class BatchSubchunk(Base):
    """What one sub-chunk computed, written in the statement that upserted its totals.

    Keyed by the sub-chunk's smallest id (ids in a batch are distinct): a rerun of its chunk job,
    under any job id, writes the same key and is counted once.
    """

    __tablename__ = "batch_subchunks"

    batch_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    first_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    job_id: Mapped[str] = mapped_column(String(200))
    requested: Mapped[int] = mapped_column(Integer)
    computed: Mapped[int] = mapped_column(Integer)
    total_sum: Mapped[Decimal] = mapped_column(Numeric(20, 2, asdecimal=True))
    missing: Mapped[list[int]] = mapped_column(ARRAY(BigInteger))
    recorded_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
