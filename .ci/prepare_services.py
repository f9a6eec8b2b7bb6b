"""Create CI's fresh test database and check Redis; exit with a clear line if either is down.
`--pgbouncer DIR` also starts a private PgBouncer (transaction mode) in front of that PostgreSQL
and writes its URL to DIR/url; CI stops it by DIR/pgbouncer.pid.
"""

import asyncio
import os
import sys
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
from redis.asyncio import Redis
from sqlalchemy import make_url

from worker.harness.pgbouncer import PrivatePgBouncer


async def main() -> None:
    database = make_url(os.environ["ORDERWORKER_TEST_DATABASE_URL"])
    name = database.database
    admin = database.set(drivername="postgresql", database="postgres")
    try:
        connection = await asyncpg.connect(admin.render_as_string(hide_password=False), timeout=10)
    except Exception as error:
        sys.exit(f"PostgreSQL unreachable at {admin.host}:{admin.port}: {error}")
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    redis = Redis.from_url(os.environ["ORDERWORKER_TEST_REDIS_URL"], socket_connect_timeout=10)
    try:
        await redis.ping()
        await redis.flushdb()  # the dedicated db index only
    except Exception as error:
        sys.exit(f"Redis unreachable: {error}")
    finally:
        await redis.aclose()
    print(f"fresh database {name}; redis db {redis.connection_pool.connection_kwargs.get('db')}")


def start_pgbouncer(directory: Path) -> None:
    database = make_url(os.environ["ORDERWORKER_TEST_DATABASE_URL"])
    pooler = PrivatePgBouncer(directory, database.render_as_string(hide_password=False))
    try:
        pooler.start()
    except Exception as error:
        sys.exit(f"PgBouncer did not start: {error}")
    (directory / "url").write_text(pooler.url(str(database.database)))
    print(f"pgbouncer (transaction mode) on 127.0.0.1:{pooler.port}")


asyncio.run(main())
if sys.argv[1:2] == ["--pgbouncer"]:
    start_pgbouncer(Path(sys.argv[2]))
