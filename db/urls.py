"""Database URLs as users write them, made into what SQLAlchemy's asyncpg dialect accepts."""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url

from db.ssl_modes import checked_ssl_mode


def split_ssl_mode(url: str) -> tuple[URL, str | None]:
    """The URL without libpq's `sslmode=`, and that mode: the dialect would hand `sslmode` to
    asyncpg, which does not know it (asyncpg's own spelling, `ssl=`, stays in the URL)."""
    parsed = make_url(url)
    mode = parsed.query.get("sslmode")
    if mode is None:
        return parsed, None
    checked = checked_ssl_mode(mode, given_ssl="ssl" in parsed.query)
    return parsed.difference_update_query(["sslmode"]), checked
