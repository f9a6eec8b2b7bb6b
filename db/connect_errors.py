"""Failures to reach or log in to PostgreSQL, told with the server's host and port (never the
password), so that whoever reads one knows which service and which setting to look at."""

from __future__ import annotations

import errno
import socket
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

if TYPE_CHECKING:  # the probes name the server without importing SQLAlchemy
    from sqlalchemy.engine import URL

DEFAULT_PORT = 5432
LOGIN_SQLSTATE_CLASS = "28"  # invalid authorization: a wrong password, an unknown role
UNKNOWN_DATABASE = "3D000"
POOLER_LOGIN_FAILED = "authentication failed"


class DatabaseConnectError(Exception):
    """No connection to PostgreSQL; `code` is the machine-readable failure code."""

    code = "database_unavailable"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class DatabaseUnreachableError(DatabaseConnectError, ConnectionError):
    """Refused, timed out or host unknown. A ConnectionError: worth another try, as a lost one."""


class DatabaseLoginError(DatabaseConnectError):
    """The server answered and refused: another try gives the same answer."""

    code = "database_auth_failed"


def sqlstate(error: BaseException) -> str | None:
    """The PostgreSQL error code behind a SQLAlchemy or asyncpg exception, if any."""
    seen: BaseException | None = error
    while seen is not None:
        code = getattr(seen, "sqlstate", None)
        if isinstance(code, str):
            return code
        seen = getattr(seen, "orig", None) or seen.__cause__
    return None


def endpoint(url: str) -> str:
    """Where a database URL connects: `host:port`, or the socket file of a `?host=/directory`
    URL (libpq's and asyncpg's way to name a Unix socket's directory)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    host = query.get("host") or parts.hostname or "localhost"
    try:
        port: int | str = query.get("port") or parts.port or DEFAULT_PORT
    except ValueError:  # not a port number: name it as written, the connection error says why
        port = parts.netloc.rpartition(":")[2]
    return f"{host}/.s.PGSQL.{port}" if host.startswith("/") else f"{host}:{port}"


def connect_error(url: URL, error: BaseException, timeout_s: float) -> DatabaseConnectError | None:
    """What a failed connection attempt to `url` means, or None if it is no connection failure."""
    where = f"PostgreSQL at {endpoint(url.render_as_string(hide_password=True))}"
    code = sqlstate(error)
    if code is not None:
        message = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        # PgBouncer refuses a login with a protocol-violation code and this text, not class 28.
        if code.startswith(LOGIN_SQLSTATE_CLASS) or POOLER_LOGIN_FAILED in message:
            return DatabaseLoginError(f"{where} refused the login: {message}")
        if code == UNKNOWN_DATABASE:
            return DatabaseLoginError(f"{where}: {message}", code="database_unavailable")
        return None
    if isinstance(error, TimeoutError):
        return DatabaseUnreachableError(f"{where} did not answer within {timeout_s:g}s")
    if isinstance(error, socket.gaierror):
        return DatabaseUnreachableError(f"{where}: host not found ({error.strerror})")
    if isinstance(error, ConnectionRefusedError) or _refused(error):
        return DatabaseUnreachableError(f"{where} refused the connection")
    if "rejected SSL upgrade" in str(error):
        return DatabaseUnreachableError(f"{where} does not accept SSL, which the URL asks for")
    if isinstance(error, OSError):
        return DatabaseUnreachableError(f"{where} unreachable: {error}")
    return None


def _refused(error: BaseException) -> bool:
    # asyncio reports every address of a host name at once: "Multiple exceptions: [Errno 111] …".
    return isinstance(error, OSError) and f"[Errno {errno.ECONNREFUSED}]" in str(error)
