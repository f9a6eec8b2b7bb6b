"""Worker replicas as real processes (`python -m worker worker`, as `orderworker worker` runs),
each logging to a file of its own, and the ORDERWORKER_* environment they run with."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from worker.harness.polling import poll_until
from worker.health import live_replicas

SETTINGS_PREFIX = "ORDERWORKER_"
TEST_PREFIX = "ORDERWORKER_TEST_"  # the test suite's own variables, never a worker setting


def replica_env(
    database_url: str,
    redis_url: str,
    queue_name: str,
    *,
    base: Mapping[str, str] | None = None,
    inherit_settings: bool = True,
    extra: Mapping[str, str] | None = None,
    metrics_port: int = 0,
) -> dict[str, str]:
    """`base` (this process's environment by default) with the servers, the queue and JSON logs;
    without `inherit_settings`, its own ORDERWORKER_* settings are left out first. No /metrics
    unless `metrics_port` asks: many replicas run at once on one host."""
    env = {
        key: value
        for key, value in (os.environ if base is None else base).items()
        if inherit_settings or not key.startswith(SETTINGS_PREFIX) or key.startswith(TEST_PREFIX)
    }
    env.update(
        ORDERWORKER_DATABASE_URL=database_url,
        ORDERWORKER_REDIS_URL=redis_url,
        ORDERWORKER_QUEUE_NAME=queue_name,
        ORDERWORKER_LOG__FORMAT="json",
        ORDERWORKER_WORKER__METRICS_PORT=str(metrics_port),
    )
    env.update(extra or {})
    return env


# A replica's /metrics: each sample's value by its name and its labels, sorted.
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int, host: str = "127.0.0.1") -> Samples:
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as response:
        body = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def worker_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "worker", "worker", *args]


@dataclass
class Replica:
    """One `orderworker worker` process; its stdout and stderr go to `log_path`."""

    process: subprocess.Popen[bytes]
    log_path: Path
    started_at: float = field(default_factory=time.monotonic)
    terminated: bool = False

    @classmethod
    def spawn(
        cls, env: Mapping[str, str], log_path: Path, *args: str, cwd: Path | None = None
    ) -> Replica:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        # The child keeps its own copy of the file descriptor; ours is closed at once.
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                worker_command(*args), env=dict(env), stdout=log, stderr=log, cwd=cwd
            )
        return cls(process, log_path)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """Its JSON log lines, all of them or those of one event."""
        found = []
        for line in self.log().splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict) and name in (None, event.get("event")):
                    found.append(event)
        return found

    async def in_flight(self, redis: Redis, queue_name: str) -> int | None:
        """Jobs in flight by its last heartbeat (a kill then orphans them); None: none yet."""
        beats = await live_replicas(redis, queue_name)
        return next((int(b["in_flight"]) for b in beats if b["pid"] == self.pid), None)

    async def ready(self, redis: Redis, queue_name: str, timeout_s: float) -> float:
        """Seconds from its launch until its first heartbeat."""

        async def beating() -> bool:
            if not self.alive():
                raise RuntimeError(f"replica exited at start; see {self.log_path}")
            return await self.in_flight(redis, queue_name) is not None

        await poll_until(beating, "a replica's first heartbeat", timeout_s, 0.1)
        return time.monotonic() - self.started_at

    def excerpt(self, lines: int = 15) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    async def exited(self, timeout_s: float) -> int:
        await poll_until(lambda: not self.alive(), "worker exit", timeout_s)
        return int(self.process.returncode)

    def terminate(self) -> None:
        """SIGTERM, once: the replica drains its in-flight jobs (a second would cut that short)."""
        if self.alive() and not self.terminated:
            self.process.send_signal(signal.SIGTERM)
            self.terminated = True

    def stop(self, timeout_s: float) -> int:
        """SIGTERM, then SIGKILL if it outlives `timeout_s`; its exit code."""
        self.terminate()
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return self.kill()

    def kill(self) -> int:
        if self.alive():
            self.process.kill()
        return self.process.wait()


def stop_all(replicas: list[Replica], timeout_s: float) -> list[int]:
    """SIGTERM to every replica at once, then wait for each (SIGKILL past `timeout_s`)."""
    for replica in replicas:
        replica.terminate()
    return [replica.stop(timeout_s) for replica in replicas]
