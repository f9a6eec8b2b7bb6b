"""Database URLs as users write them, made into what SQLAlchemy's asyncpg dialect accepts."""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url

# libpq's modes; asyncpg takes the same names as its `ssl` connect argument.
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def split_ssl_mode(url: str) -> tuple[URL, str | None]:
    """The URL without libpq's `sslmode=`, and that mode: the dialect would hand `sslmode` to
    asyncpg, which does not know it (asyncpg's own spelling, `ssl=`, stays in the URL)."""
    parsed = make_url(url)
    mode = parsed.query.get("sslmode")
    if mode is None:
        return parsed, None
    if not isinstance(mode, str) or mode not in SSL_MODES:
        raise ValueError(f"sslmode={mode!r} is not one of {', '.join(SSL_MODES)}")
    if "ssl" in parsed.query:
        raise ValueError("give ssl= or sslmode=, not both")
    return parsed.difference_update_query(["sslmode"]), mode
