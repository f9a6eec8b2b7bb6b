"""Redis connection settings from a URL: redis://, rediss://, unix:// or redis+sentinel://."""

from __future__ import annotations

from urllib.parse import parse_qs, unquote, urlsplit

from arq.connections import RedisSettings
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

SENTINEL_SCHEME = "redis+sentinel"
# What a Redis outage looks like to a client: worth waiting out, never a reason to die.
REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)
DEFAULT_SENTINEL_PORT = 26379


def _command_retry() -> Retry:
    # After a Redis restart every pooled connection is stale: each command reconnects and is
    # sent again at once instead of failing, so clients resume as soon as Redis is back.
    return Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2)


def redis_settings_from_url(url: str, *, conn_retries: int = 5) -> RedisSettings:
    """Also `redis+sentinel://[:password@]host1:26379,host2:26379/master[/db]` for Sentinel."""
    parts = urlsplit(url)
    if parts.scheme != SENTINEL_SCHEME:
        settings = RedisSettings.from_dsn(url)
        settings.conn_retries = conn_retries
        settings.retry = _command_retry()
        settings.retry_on_error = [RedisConnectionError, RedisTimeoutError]
        return settings
    credentials, _, hosts = parts.netloc.rpartition("@")
    username, _, password = credentials.partition(":")
    nodes: list[tuple[str, int]] = []
    for node in hosts.split(","):
        host, _, port = node.partition(":")
        nodes.append((host, int(port or DEFAULT_SENTINEL_PORT)))
    path = [segment for segment in parts.path.split("/") if segment]
    if not path:
        raise ValueError("a sentinel URL names its master: redis+sentinel://host:26379/master")
    database = int(path[1]) if len(path) > 1 else int(parse_qs(parts.query).get("db", ["0"])[0])
    return RedisSettings(
        host=nodes,
        sentinel=True,
        sentinel_master=path[0],
        username=unquote(username) or None,
        password=unquote(password) or None,
        database=database,
        conn_retries=conn_retries,
        retry=_command_retry(),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )


def endpoint(settings: RedisSettings) -> str:
    """Which Redis a RedisSettings reaches, as people name it: never with its password."""
    if settings.sentinel and isinstance(settings.host, list):
        nodes = ",".join(f"{host}:{port}" for host, port in settings.host)
        return f"sentinel {nodes} master={settings.sentinel_master}"
    return settings.unix_socket_path or f"{settings.host}:{settings.port}"


def redacted(settings: RedisSettings) -> str:
    """Where a RedisSettings can be shown: never with its password."""
    return f"redis {endpoint(settings)} db={settings.database} ssl={settings.ssl}"


async def close_sentinels(redis: Redis) -> None:
    """A client reached through Sentinel also holds connections to the Sentinels, which closing
    the client (or its pool) leaves open: close them too. Nothing to do for any other client."""
    pool = redis.connection_pool
    if isinstance(pool, SentinelConnectionPool):
        for sentinel in pool.sentinel_manager.sentinels:
            await sentinel.aclose()


async def name_connections(redis: Redis, name: str) -> None:
    """Every connection of `redis` names itself `name` in CLIENT LIST (CLIENT SETNAME as it
    connects), so ops can count a process's connections. Call before anything else uses it:
    the idle connections made so far are closed and dropped, to be made again with the name."""
    pool = redis.connection_pool
    pool.connection_kwargs["client_name"] = name
    await pool.disconnect(inuse_connections=False)
    pool.reset()  # type: ignore[no-untyped-call]  # untyped in redis-py
