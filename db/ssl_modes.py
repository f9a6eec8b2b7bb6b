"""libpq's `sslmode=` in a database URL, read and checked with urllib alone: loading the settings
checks it, and commands that need no engine never import SQLAlchemy."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

# libpq's modes; asyncpg takes the same names as its `ssl` connect argument.
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def ssl_mode(url: str) -> str | None:
    """The URL's `sslmode`, or None; ValueError for one asyncpg cannot take."""
    query = parse_qs(urlsplit(url).query, keep_blank_values=True)
    modes = query.get("sslmode")
    if modes is None:
        return None
    return checked_ssl_mode(modes[0] if len(modes) == 1 else tuple(modes), given_ssl="ssl" in query)


def checked_ssl_mode(mode: object, *, given_ssl: bool) -> str:
    """`mode` if it is one of libpq's, given without asyncpg's own spelling (`ssl=`) beside it."""
    if not isinstance(mode, str) or mode not in SSL_MODES:
        raise ValueError(f"sslmode={mode!r} is not one of {', '.join(SSL_MODES)}")
    if given_ssl:
        raise ValueError("give ssl= or sslmode=, not both")
    return mode
