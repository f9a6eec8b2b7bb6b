"""The seed service's sample data, plus generated orders, loaded with set-based SQL."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

SAMPLE = [
    text(
        """
        INSERT INTO item (id, name, price, description) VALUES
            (1, 'Milk', 5.00, NULL), (2, 'Kit Kat', 1.00, NULL),
            (3, 'Bread', 10.50, NULL), (4, 'Onion', 2.00, NULL)
        ON CONFLICT (id) DO NOTHING
        """
    ),
    text(
        """
        INSERT INTO address (id, flat_number, post_code) VALUES
            (1, 101, '10001'), (2, 201, '10002'), (3, 301, '10003')
        ON CONFLICT (id) DO NOTHING
        """
    ),
    text(
        """
        INSERT INTO customer (id, name, address_id) VALUES
            (1, 'Alex', 1), (2, 'Blake', 2), (3, 'Cam', 3)
        ON CONFLICT (id) DO NOTHING
        """
    ),
    text(
        """
        INSERT INTO orders (id, customer_id, order_time) VALUES
            (1, 1, '2024-03-18 10:30:00+00'),
            (2, 3, '2024-03-20 11:00:00+00'),
            (3, 2, '2024-03-25 15:00:00+00')
        ON CONFLICT (id) DO NOTHING
        """
    ),
    text(
        """
        INSERT INTO order_items (order_id, item_id, quantity) VALUES
            (1, 2, 4), (1, 3, 2), (1, 1, 1), (2, 2, 2), (2, 4, 5)
        ON CONFLICT (order_id, item_id) DO NOTHING
        """
    ),
]

# Explicit ids above leave the sequences behind; move them past the highest id in use.
SYNC_SEQUENCES = [
    text(
        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), GREATEST(MAX(id), 1)) FROM {table}"
    )
    for table in ("item", "address", "customer", "orders")
]

# Lines are derived from the order id, so the data is the same on every run. Every tenth
# order has no lines (it totals 0.00); the rest have two or three of the sample items.
GENERATE_ORDERS = text(
    """
    WITH customers AS (
        SELECT array_agg(id ORDER BY id) AS ids FROM customer
    ), new_orders AS (
        INSERT INTO orders (customer_id, order_time)
        SELECT customers.ids[1 + g % cardinality(customers.ids)],
               TIMESTAMPTZ '2024-04-01 00:00:00+00' + g * INTERVAL '1 minute'
        FROM generate_series(1, :count) AS g, customers
        RETURNING id
    )
    INSERT INTO order_items (order_id, item_id, quantity)
    SELECT new_orders.id, item.id, 1 + (new_orders.id + item.id) % 5
    FROM new_orders JOIN item ON item.id <= 4
    WHERE new_orders.id % 10 <> 0 AND (new_orders.id * 7 + item.id * 13) % 5 < 3
    """
)


async def load_sample(session: AsyncSession) -> None:
    """Idempotent: the sample rows keep their ids and are never duplicated. Never commits."""
    for statement in SAMPLE:
        await session.execute(statement)
    for statement in SYNC_SEQUENCES:
        await session.execute(statement)


async def generate_orders(session: AsyncSession, count: int) -> None:
    """Append `count` orders with lines over the sample items. Never commits."""
    if count > 0:
        await session.execute(GENERATE_ORDERS, {"count": count})


async def count_orders(session: AsyncSession) -> int:
    return int((await session.execute(text("SELECT count(*) FROM orders"))).scalar_one())
