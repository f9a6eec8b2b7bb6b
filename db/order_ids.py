"""Every order id, a keyset page at a time: `totals --all` never holds all of them at once."""

from __future__ import annotations

from collections.abc import AsyncIterator

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

# One array per page: the driver decodes it in C, where a row per id costs SQLAlchemy's result layer
# about a microsecond each.
PAGE_OF_IDS = text(
    "SELECT array_agg(id ORDER BY id) FROM"
    " (SELECT id FROM orders WHERE id > :after ORDER BY id LIMIT :page_size) AS page"
)


async def order_id_pages(engine: AsyncEngine, page_size: int) -> AsyncIterator[list[int]]:
    """Pages in id order; each page is read on a connection held only for that query."""
    after = 0
    while True:
        async with engine.connect() as connection:
            params = {"after": after, "page_size": page_size}
            page: list[int] = await connection.scalar(PAGE_OF_IDS, params) or []
        if not page:
            return
        yield page
        after = page[-1]


async def largest_order_id(engine: AsyncEngine) -> int | None:
    async with engine.connect() as connection:
        largest = await connection.scalar(text("SELECT max(id) FROM orders"))
    return None if largest is None else int(largest)
