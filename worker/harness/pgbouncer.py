"""A private PgBouncer (the system's `pgbouncer` binary) in transaction pooling mode, in front of a
PostgreSQL server, on a port and in a folder of its own; run as a daemon so that it outlives the
process that started it (CI starts it once, the test runs use it, CI stops it)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

from sqlalchemy import make_url

from worker.harness.servers import STOP_TIMEOUT_S, free_port, wait_for_port

# PgBouncer refuses to run as root; it switches to this user when started by root.
UNPRIVILEGED_USERS = ("postgres", "nobody")

CONFIG = """\
[databases]
; Any database name (tests create theirs on the fly) goes to the upstream server.
* = host={upstream_host} port={upstream_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {directory}/userlist.txt
admin_users = {user}
pool_mode = transaction
max_client_conn = 1000
default_pool_size = 20
; Every test has a database of its own: close idle server connections soon, so the pools of
; finished tests never hold the upstream server's connection limit (100 by default).
server_idle_timeout = 5
; asyncpg and libpq send these at startup; PgBouncer would refuse the connection otherwise.
ignore_startup_parameters = extra_float_digits
logfile = {directory}/pgbouncer.log
pidfile = {directory}/pgbouncer.pid
"""


def pgbouncer_binary() -> str:
    found = shutil.which("pgbouncer") or shutil.which("/usr/sbin/pgbouncer")
    if found is None:
        raise FileNotFoundError("no pgbouncer binary on PATH (Debian: apt-get install pgbouncer)")
    return found


class PrivatePgBouncer:
    """`start()` writes pgbouncer.ini into `directory` and starts the daemon, which writes its pid
    to `directory`/pgbouncer.pid (CI ends it by that); `url(database)` is how a client reaches
    `database` through it."""

    def __init__(self, directory: Path, upstream_url: str, user: str = "postgres") -> None:
        self.directory = directory
        self.upstream = make_url(upstream_url)
        self.user = user
        self.port = free_port()

    def url(self, database: str) -> str:
        pooled = self.upstream.set(host="127.0.0.1", port=self.port, database=database, query={})
        return pooled.render_as_string(hide_password=False)

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = CONFIG.format(
            upstream_host=self.upstream.host or "127.0.0.1",
            upstream_port=self.upstream.port or 5432,
            port=self.port,
            directory=self.directory,
            user=self.user,
        )
        (self.directory / "pgbouncer.ini").write_text(config)
        (self.directory / "userlist.txt").write_text(f'"{self.user}" ""\n')
        command = [pgbouncer_binary(), "-d", str(self.directory / "pgbouncer.ini")]
        if os.geteuid() == 0:
            run_as = _unprivileged_user()
            _chown_tree(self.directory, run_as)
            command[2:2] = ["-u", run_as.pw_name]
        subprocess.run(command, check=True, timeout=STOP_TIMEOUT_S)
        wait_for_port(self.port)


def _unprivileged_user() -> pwd.struct_passwd:
    for name in UNPRIVILEGED_USERS:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError(f"PgBouncer will not run as root and none of {UNPRIVILEGED_USERS} exists")


def _chown_tree(directory: Path, user: pwd.struct_passwd) -> None:
    for path in [directory, *directory.iterdir()]:
        os.chown(path, user.pw_uid, user.pw_gid)
